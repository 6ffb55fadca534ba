"""The model layer (pure): every kind emu reads, parsed and validated into typed data."""
