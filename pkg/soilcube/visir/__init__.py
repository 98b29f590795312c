"""VIS/IR thermal-inertia downscaling of SMAP (Fang et al. 2025): fit, apply, correct to SMAP 9 km, QA bits.

Pure array algorithms (xarray in, xarray out, dask-friendly); the I/O around them lives elsewhere.
"""
