"""Where dlib's face chips lie in aligned face crops: the measurement behind fd_face's CHIP_BOX.

    python benchmarks/fd_face_chip.py --data ../shared/data/faces-aaf-128.zip -n 500

dlib's face-recognition ResNet was trained on 150×150 chips cut by ``get_face_chip`` around 5
landmarks (padding 0.25). fd_face cuts one fixed box from every image instead, so that real and
generated faces go in alike and none is dropped for want of landmarks. This script finds faces
(HOG, upsampled once) in ``n`` real aligned crops, takes the chip dlib would cut for each, and
prints the mean box as fractions of the side (what CHIP_BOX holds), its spread and the mean
rotation. Then it checks the fixed box as a stand-in: for each face, the distance between its
descriptor from the fixed chip and from dlib's own chip, against the distance between two
different faces' descriptors (dlib calls < 0.6 "the same person").
"""

from __future__ import annotations

import argparse

import numpy as np
from machine import describe

from facegan.data.prepare import open_prepared, resolve_dataset
from facegan.device import pick_device
from facegan.facemodels import model_file, require
from facegan.metrics import fd_face


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--res", type=int, default=128, help="side the crops are prepared at")
    ap.add_argument("-n", type=int, default=500)
    args = ap.parse_args()
    dlib = require("dlib", "this script")
    images = open_prepared(resolve_dataset(args.data, args.res, 3, progress=False)).images
    pick = np.arange(args.n) * len(images) // args.n
    det = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(model_file("shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(model_file(fd_face.WEIGHTS))
    boxes, angles, own, found = [], [], [], []
    for i in pick:
        img = np.ascontiguousarray(images[i])
        rects = det(img, 1)
        if len(rects) != 1:
            continue
        s = shape(img, rects[0])
        chip = dlib.get_face_chip_details(s, size=fd_face.CHIP, padding=0.25)
        r = chip.rect
        boxes.append([r.left() / args.res, r.top() / args.res, r.right() / args.res, r.bottom() / args.res])
        angles.append(np.degrees(chip.angle))
        own.append(np.asarray(net.compute_face_descriptor(img, s)))
        found.append(i)
    boxes = np.array(boxes)
    mean = boxes.mean(0)
    print(f"{describe(pick_device('cpu'))}\n")
    print(f"one face found in {len(found)} of {args.n} crops ({args.res}²)")
    print(f"dlib's chip box (left, top, right, bottom) as fractions of the side: mean {np.round(mean, 3).tolist()}, "
          f"std {np.round(boxes.std(0), 3).tolist()}; rotation {np.mean(angles):.2f}° ± {np.std(angles):.2f}°")
    fixed = fd_face.embed(np.asarray(images[found]))  # with the CHIP_BOX in the code now
    own = np.array(own)
    same = np.linalg.norm(fixed - own, axis=1)
    other = np.linalg.norm(own - np.roll(own, 1, axis=0), axis=1)
    print(f"CHIP_BOX in fd_face.py: {fd_face.CHIP_BOX}")
    print(f"descriptor distance, fixed chip vs dlib's chip of the same face: median {np.median(same):.3f} "
          f"(90th pct {np.percentile(same, 90):.3f}); two different faces: median {np.median(other):.3f}")


if __name__ == "__main__":
    main()
