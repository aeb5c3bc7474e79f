"""hyp2: a reproduction of HyP² Loss (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for
Multi-label Image Retrieval", ACM MM 2022) for deep supervised multi-label hashing.

The Python API of a trained model::

    import hyp2
    hasher = hyp2.load_hasher("result/voc2007_googlenet_48.ckpt", device="cuda")
    codes = hasher.encode(images)          # PIL images, paths or a (B, 3, H, W) batch -> (B, K) ±1
    index = hyp2.CodeIndex.load("result/voc2007_googlenet_48_codes.npz")
    ids, dist = index.search(codes, k=10)  # exact, ties in database order; faiss when installed
"""

__version__ = "0.1.0"

# Imported on first use, so that `import hyp2` stays light (no torch) for tools that only read files.
_LAZY = {"load_hasher": "hyp2.hasher", "Hasher": "hyp2.hasher", "CodeIndex": "hyp2.index"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hyp2' has no attribute {name!r}")
