"""The bridge between calls and realtime speech models."""
