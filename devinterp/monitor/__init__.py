"""Monitoring training that devinterp did not run: someone's own loop (`Monitor`), the Hugging Face
Trainer (through `devinterp.integrations.hf`), checkpoint folders from elsewhere (`analyze_checkpoints`).
Each writes a normal run directory (`devinterp.monitor.run_files`)."""
from devinterp.monitor.checkpoint_folders import CheckpointsAnalysis, analyze_checkpoints
from devinterp.monitor.monitor import Monitor

__all__ = ["Monitor", "analyze_checkpoints", "CheckpointsAnalysis"]
