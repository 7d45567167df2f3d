"""The Lightning callbacks every run shares, one purpose per module."""
