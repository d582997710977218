"""The feature store: item and entity features kept in Redis, and /choose candidates resolved."""
