"""Anonymize faces in photos and videos with generated faces (``facegan anonymize``).

One module per step, in the order a face goes through them:

- :mod:`~facegan.anonymize.detect` — faces, landmarks and identity embeddings (OpenCV, dlib);
- :mod:`~facegan.anonymize.align` — the similarity transform to the model's framing and back;
- :mod:`~facegan.anonymize.replace` — project, decode, upscale, colour-match, blend;
- :mod:`~facegan.anonymize.obscure` — pixelate or blur (the fail-closed fallbacks);
- :mod:`~facegan.anonymize.pipeline` — per face: which of the above, and the audit record;
- :mod:`~facegan.anonymize.video` — frames, audio and tracking;
- :mod:`~facegan.anonymize.batch` — a photo, folder or video in; outputs and ``audit.json`` out.

Needs the optional extra: ``pip install 'facegan[anonymize]'``.
"""
