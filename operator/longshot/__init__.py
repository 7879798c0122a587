"""Longshot: a Kubernetes operator that turns a build request into merged, tested code."""

__version__ = "0.1.0"
