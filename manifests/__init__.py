"""The on-disk record of a run: schema, shard part files, final exports."""
