"""A physically based camera: scene → optics → sensor → image processor (ISETCam-style stages).

>>> import torch
>>> from weakspot.camera import Camera
>>> cap = Camera().capture(torch.full((1, 3, 8, 8), 0.5), generator=0)
>>> sorted(k for k in ("photons", "electrons", "dn", "image") if hasattr(cap, k))
['dn', 'electrons', 'image', 'photons']
"""

from weakspot.camera.contact_sheet import camera_contact_sheet
from weakspot.camera.isp import ISP
from weakspot.camera.optics import Optics
from weakspot.camera.pipeline import Camera, Capture, resample_to
from weakspot.camera.scene import Scene
from weakspot.camera.sensor import Sensor

__all__ = ["Camera", "Capture", "Scene", "Optics", "Sensor", "ISP", "resample_to", "camera_contact_sheet"]
