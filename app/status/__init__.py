"""``banditd status``: how every experiment's stream, lease, model and log are doing."""
