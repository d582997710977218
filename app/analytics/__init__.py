"""What an experiment earned, for analysts: the views' upkeep, reports and exports."""
