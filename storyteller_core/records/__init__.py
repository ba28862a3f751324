"""The records of a video's life: the video, the analysis asked of it, the batch and its items, the story."""
