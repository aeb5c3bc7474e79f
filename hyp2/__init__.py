"""hyp2: a reproduction of HyP² Loss (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for
Multi-label Image Retrieval", ACM MM 2022) for deep supervised multi-label hashing."""

__version__ = "0.1.0"
