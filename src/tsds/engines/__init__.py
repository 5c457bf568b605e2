"""Execution engines that run the pipeline: local (this process) and Ray (a cluster)."""
