"""Fakes of what does not exist on the test machines: NVML and its GPUs."""
