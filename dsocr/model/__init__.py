"""The DeepSeek-OCR 2 network: module tree mirrors the official checkpoint names.

Shape legend used in comments: B batch, T tokens, H heads, D head dim, C channels, E experts,
K experts per token, V views, G grid side (patches), S view side (pixels).
"""
