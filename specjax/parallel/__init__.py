"""Device mesh (data, fsdp, tensor) and logical-axis sharding rules (sharding)."""
