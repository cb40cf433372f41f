"""The shared base below every plane: the data contract, hashing, timing, worker processes, prompt and judge formats, schema text, sketch SQL, proportions and disk-space errors."""
