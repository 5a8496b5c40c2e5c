"""Scores of detections, instance masks and semantic masks against ground truth."""
