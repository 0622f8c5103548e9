"""The image-captioning plugin (issue #11), in progress: not registered yet (datasets first)."""
