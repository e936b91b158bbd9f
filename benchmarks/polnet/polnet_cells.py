"""Out-of-family test cells: structures from PolNet (an independent simulator), imaged by annotomo.

PolNet (anmartinezs/polnet, Apache-2.0; not on PyPI) builds cellular samples from real structures:
membranes as bilayers of 2.5-3.5 nm, microtubules as hollow walls of 13 protofilaments of tubulin,
ribosomes (PDB 4v4r) and other complexes (PDB density maps) crowded around them. Its own microscope
stage needs IMOD, so the densities are imaged here by annotomo's Fourier imaging model
(`annotomo.synth.image`: CTF, tilt range, dose, noise, reconstruction) under named conditions.

These cells only validate: nothing trains on them, and no choice is tuned on them (benchmarks/README.md).

Two steps, in two environments:

    # 1. structures, with PolNet's dependencies (vtk, scikit-image, ...) and a PolNet source tree:
    python -m venv /tmp/pnv && /tmp/pnv/bin/pip install -r benchmarks/polnet/requirements.txt
    /tmp/pnv/bin/pip install --no-deps POLNET_SOURCE
    /tmp/pnv/bin/python benchmarks/polnet/polnet_cells.py structures --polnet-data POLNET_SOURCE/data \\
        --out benchmarks/output/polnet --seeds 1 2 3
    # 2. tomograms, with annotomo:
    .venv/bin/python benchmarks/polnet/polnet_cells.py image --out benchmarks/output/polnet

Step 1 writes cell_SEED_density.mrc (float32, 10 A, matter positive) and cell_SEED_classes.mrc (uint8:
1 microtubule, 2 ribosome, 3 membrane; 0 everything else, other complexes and actin included); step 2
writes cell_SEED_CONDITION_tomo.mrc and cell_SEED_labels.mrc (feature names stored).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CLASS_NAMES = ["microtubule", "ribosome", "membrane"]
PIXEL_SIZE = 10.0  # Angstrom, PolNet's templates' (the CryoET Data Portal's is 10.012)
SHAPE_XYZ = (256, 256, 120)  # PolNet's (X, Y, Z) voxels: 256 x 256 nm wide, 120 nm deep
# What becomes which class: PolNet's model names (its label registry) -> annotomo class index.
MEMBRANES = ("sphere", "ellipsoid", "toroid")
MICROTUBULES = ("mt",)
RIBOSOMES = ("pdb_4v4r",)
PROTEINS = ["4v4r_10A.pns", "3j9i_10A.pns", "2cg9_10A.pns", "1bxn_10A.pns", "5mrc_10A.pns"]

# name: annotomo.synth.image options (pixel size 10 A)
CONDITIONS = {
    "wbp": dict(snr=0.4, tilt_range=60.0, defocus_um=3.0),
    "low_snr": dict(snr=0.12, tilt_range=60.0, defocus_um=4.0),
    "sirt_45deg": dict(snr=0.3, tilt_range=45.0, defocus_um=5.0, reconstruction="sirt", sirt_iterations=15),
    "denoised": dict(
        snr=0.3, tilt_range=60.0, defocus_um=3.0, dose=120.0, dose_weighting=True, reconstruction="denoised"
    ),
}


def structures(data: Path, out: Path, seed: int):
    """One PolNet sample: its density and class labels, (z, y, x) at 10 A."""
    import random

    import mrcfile
    from polnet.sample.filaments.flms_file import FlmsFile
    from polnet.sample.membranes.mb_file import MbFile
    from polnet.sample.pns.pn_file import PnFile
    from polnet.sample.sample import SyntheticSample

    random.seed(seed)
    np.random.seed(seed)
    sample = SyntheticSample(shape=SHAPE_XYZ, v_size=PIXEL_SIZE, offset=(4, 4, 4))
    for name in ("sphere.mbs", "ellipsoid.mbs"):
        sample.add_set_membranes(params=MbFile().load(data / "in_mbs" / name), max_mbtries=10)
    sample.add_helicoidal_network(params=FlmsFile().load(data / "in_flms" / "mt.flms"))
    for name in PROTEINS:
        params = PnFile().load(data / "in_10A" / name)
        sample.add_set_cproteins(params=params, data_path=data, surf_dec=0.9, mmer_tries=20, pmer_tries=100)
    entity = sample.labels
    classes = np.zeros(entity.shape, np.uint8)
    for model, entity_id in sample.label_registry:
        for index, names in enumerate((MICROTUBULES, RIBOSOMES, MEMBRANES), start=1):
            if model in names:
                classes[entity == entity_id] = index
    density = np.ascontiguousarray(np.transpose(sample.density, (2, 1, 0)), dtype=np.float32)
    classes = np.ascontiguousarray(np.transpose(classes, (2, 1, 0)))
    out.mkdir(parents=True, exist_ok=True)
    for suffix, volume in (("density", density), ("classes", classes)):
        with mrcfile.new(out / f"cell_{seed}_{suffix}.mrc", overwrite=True) as mrc:
            mrc.set_data(volume)
            mrc.voxel_size = PIXEL_SIZE
    counts = {n: int((classes == k).sum()) for k, n in enumerate(CLASS_NAMES, start=1)}
    print(f"cell {seed}: {density.shape} (z, y, x), voxels per class {counts}")


def image(out: Path, seeds, conditions):
    """Image each cell's density under each condition; write tomograms and named labels."""
    import mrcfile

    from annotomo.synth import image as tem_image
    from annotomo.volumes import write_volume

    for seed in seeds:
        density = mrcfile.read(out / f"cell_{seed}_density.mrc").astype(np.float32)
        classes = mrcfile.read(out / f"cell_{seed}_classes.mrc").astype(np.uint8)
        write_volume(out / f"cell_{seed}_labels.mrc", classes, (PIXEL_SIZE,) * 3, class_names=CLASS_NAMES)
        for name in conditions:
            rng = np.random.default_rng(seed * 100 + sorted(CONDITIONS).index(name))
            tomo = tem_image(density, PIXEL_SIZE, rng, **CONDITIONS[name])
            write_volume(out / f"cell_{seed}_{name}_tomo.mrc", tomo, (PIXEL_SIZE,) * 3)
            print(f"cell {seed}, {name}: {tomo.shape}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["structures", "image"])
    ap.add_argument("--polnet-data", type=Path, help="PolNet's data folder (step structures)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/output/polnet"))
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    ap.add_argument("--conditions", nargs="*", default=list(CONDITIONS))
    args = ap.parse_args()
    if args.step == "structures":
        if args.polnet_data is None:
            ap.error("structures needs --polnet-data (PolNet's data folder)")
        for seed in args.seeds:
            structures(args.polnet_data, args.out, seed)
    else:
        image(args.out, args.seeds, args.conditions)


if __name__ == "__main__":
    main()
