"""How far apart are different heads' renders for dlib's face descriptor?

The synthetic cohort should look like different people; this gives the yardstick: the
identity distance (128-d descriptor at dlib's 68 landmarks on each frontal render) between
every pair of the real heads (``cohort/real_heads.py``), pydeface's template and a few
synthetic subjects. dlib calls descriptors closer than 0.6 the same person.

Usage:
    python benchmarks/render_identity.py [--subjects 3] [--seed 2026]
"""

from __future__ import annotations

import argparse
from itertools import combinations

import numpy as np

from defacing_assets.cohort.phantom import template_path
from defacing_assets.cohort.real_heads import REAL_HEADS, fetch
from defacing_assets.cohort.synthetic import generate_subject
from defacing_assets.imaging.io import load_volume
from defacing_assets.qc.face import FaceDetector
from defacing_assets.qc.render import render_surface


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    heads = {name: (fetch(name).image, fetch(name).modality) for name in sorted(REAL_HEADS)}
    heads["pydeface template"] = (load_volume(str(template_path())), "MR")
    for index in range(args.subjects):
        scan, _ = generate_subject(f"S{index}", index, args.seed, "demo")
        heads[f"synthetic {index} (seed {args.seed})"] = (scan.image, scan.modality)
    detector = FaceDetector()
    descriptors = {}
    for name, (image, modality) in heads.items():
        (view,) = render_surface(image, modality, views=("frontal",)).values()
        landmarks = detector.face_landmarks(view.image)
        if landmarks is None:
            print(f"{name}: no face on the frontal render")
            continue
        descriptors[name] = detector.descriptor(view.image, landmarks)
    print("| head | head | identity distance |\n|---|---|---:|")
    for first, second in combinations(descriptors, 2):
        distance = float(np.linalg.norm(descriptors[first] - descriptors[second]))
        print(f"| {first} | {second} | {distance:.3f} |")


if __name__ == "__main__":
    main()
