"""Offline reports: JSON documents and a self-contained HTML page with plots."""
