"""The ASR speaker-adaptation plugin (issue #12): speech recognition and speaker identification."""
