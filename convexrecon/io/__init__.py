"""Readers and writers: fastMRI HDF5, BART cfl, ISMRMRD, numpy; :func:`load_kspace`
dispatches on the file type. Every writer is atomic (temporary file, then rename)."""

from convexrecon.io.cfl import BartLayout, read_cfl, write_bart_image, write_cfl
from convexrecon.io.fastmri import FastMRIData, read_fastmri, write_fastmri, write_reconstruction
from convexrecon.io.ismrmrd import read_ismrmrd
from convexrecon.io.load import KspaceData, load_kspace, read_npy, write_npy

__all__ = [
    "FastMRIData", "read_fastmri", "write_fastmri", "write_reconstruction",
    "read_cfl", "write_cfl", "read_ismrmrd", "KspaceData", "load_kspace", "read_npy",
    "write_npy", "BartLayout", "write_bart_image",
]
