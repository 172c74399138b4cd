"""The ``rally-side`` world: side-view "tennis" rallies with large cues, drawn with numpy (the default world).

Why: no sports video can be downloaded on our machines, yet every part of pespot (clips, model, losses, metrics)
needs a dataset whose events sit at an exact frame. This module simulates rallies in continuous time and renders
them as small frames, so every label is exact by construction and the dataset exercises what the paper is about:

* **precise events** -- the ball flies on parabolas (gravity ``G``) between contacts; a contact happens at a
  continuous time ``tc`` and is labelled at the frame, of the two frames around ``tc``, that shows the ball
  nearest to the contact point (``event_frame``); so mAP at tolerance 0 and at tolerance 2 differ;
* **long-range dependency** -- a rally that ends with a deep lob landing on the baseline is "called" by an
  umpire light 32-40 frames after the bounce: green = ``line_in``, red = ``line_out``. The two classes are
  identical up to and well past the event frame; only the light, >= 32 frames later, tells them apart;
* **class imbalance** -- ``hit`` and ``bounce`` happen several times per rally, ``net`` in a few percent of
  rallies (a 30x-60x spread on the ``bench`` preset);
* **distractors** -- a bird crossing the sky, a spectator's ball hopping along the advertising wall (bounces that
  are not events), players swaying, scoreboard flashes of other colours, camera shake, sensor noise, and
  per-video colours for court, stands, ball and players.

Geometry (court units): ``x`` runs from 0 (left edge of the frame) to 1 (right edge), ``y`` is the height above
the ground, with the same scale as ``x``; the ball's position is its centre, so it touches the ground at
``y = BALL_R``. Times are seconds from the start of the video; frame ``n`` shows the scene at time ``n / fps``.

Public API: ``CLASSES``, ``PRESETS``, ``plan_dataset`` (the per-video specs of a preset), ``simulate_video``
(frames + the generator's own physical state for one video); ``pespot.data.synthetic.generate`` writes a dataset.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from pespot.data.labels import Event, Video
from pespot.data.synthetic.common import Canvas, event_frame, jitter, split_id, to_uint8
from pespot.errors import PespotError

GENERATOR_VERSION = 2  # bump when the output for a given (preset, seed) changes (2: mp4 with the index first)

# Class order = model outputs 1..K (0 is background).
NAME = "rally-side"
CLASSES = ["serve", "hit", "bounce", "net", "line_in", "line_out"]
LONG_RANGE_PAIR = ("line_in", "line_out")
LONG_RANGE = LONG_RANGE_PAIR  # the classes decided only well after their frame

# ---- physics and court layout (court units, seconds) ----------------------------------------------------------
G = 2.8  # gravity
BALL_R = 0.04  # ball radius
NET_X, NET_H, NET_W = 0.5, 0.11, 0.016  # net centre, height, thickness
BASELINE = 0.94  # the far baseline seen from the left player (mirrored: 0.06 on the left)
Y_MAX = 0.70  # highest ball centre, so the ball stays in the frame
GROUND_ROW = 0.84  # the ground is at this fraction of the frame height
HAND_Y = 0.17  # ball held before the serve
PADDLE_OFFSET = 0.035  # paddle centre in front of the body
CONTACT_OFFSET = PADDLE_OFFSET + BALL_R + 0.01  # ball centre at contact, in front of the body
READY_X = 0.18  # mirrored ready position of a player's body
READY_PADDLE_Y = 0.12
SWING_S = 0.2  # half-duration of a swing (paddle from back to front)
SWING_ANGLE = math.radians(65)
LIGHT_DELAY = (32, 40)  # frames from the baseline bounce to the umpire light (inclusive range)
LIGHT_FRAMES = (15, 20)  # frames the light stays on
STUCK_S = 0.4  # a ball in the net stays visible this long
EXIT_MARGIN = BALL_R + 0.06  # beyond the frame edge (plus the largest camera shake) the ball is gone

# Scoreboard colours (RGB in [0, 1]): off, the two calls, and the distractor flashes.
LIGHT_OFF = (0.12, 0.12, 0.12)
LIGHT_COLOURS = {"line_in": (0.10, 0.85, 0.20), "line_out": (0.90, 0.10, 0.10)}
FLASH_COLOURS = ((0.95, 0.85, 0.10), (0.15, 0.35, 0.95), (0.95, 0.95, 0.95))


# ------------------------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    """Sizes and difficulty of a synthetic dataset."""

    name: str
    videos: dict[str, int]  # split -> number of videos
    num_frames: tuple[int, int]  # frames per video, inclusive range
    size: int = 64  # frames are size x size pixels
    fps: float = 25.0
    mean_returns: float = 3.5  # hits after the serve per rally (geometric), before fitting into the video
    net_fraction: float = 0.06  # rallies that end in the net (the rest end with a baseline call, half in/out)
    rally_seconds: float = 9.0  # budget per rally: rallies per video = max(1, seconds // rally_seconds)
    shake_px: int = 2  # largest camera shake
    noise: tuple[float, float] = (2.0, 6.0)  # sensor noise sigma range (0-255 scale)
    distractors: bool = True
    description: str = ""


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", {"train": 6, "val": 2, "test": 2}, (150, 170), net_fraction=0.15,
                   description="tests: 10 short videos, one rally each"),
    "small": Preset("small", {"train": 48, "val": 10, "test": 12}, (280, 320), net_fraction=0.12,
                    rally_seconds=6.0, noise=(1.0, 4.0),
                    description="the demo: trainable on 2 CPU cores in minutes"),
    "bench": Preset("bench", {"train": 200, "val": 40, "test": 60}, (480, 560), net_fraction=0.06,
                    rally_seconds=8.0, description="the ablation benchmark (30x+ class imbalance)"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (a PespotError lists the known ones)."""
    if name not in PRESETS:
        raise PespotError(f"unknown synthetic preset '{name}' (expected one of: {', '.join(PRESETS)})")
    return PRESETS[name]


# ------------------------------------------------------------------------------------------------------------
# The generator's state: ball segments, contacts, players, lights


@dataclass
class Segment:
    """The ball between two moments: a parabola (``gravity`` > 0) or at rest (velocities and gravity 0)."""

    t0: float
    t1: float
    x0: float
    y0: float
    vx: float = 0.0
    vy: float = 0.0
    gravity: float = 0.0

    def position(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Ball centre at time(s) ``t`` (court units), extrapolating the same motion outside [t0, t1]."""
        dt = np.asarray(t, dtype=np.float64) - self.t0
        return self.x0 + self.vx * dt, self.y0 + self.vy * dt - 0.5 * self.gravity * dt * dt

    def velocity_y(self, t: float) -> float:
        """Vertical velocity at time ``t``."""
        return self.vy - self.gravity * (t - self.t0)


@dataclass
class Contact:
    """A physical event: the ball meets a paddle, the ground or the net at a continuous time."""

    time: float  # seconds from the start of the video
    label: str
    x: float  # ball centre at contact
    y: float
    side: str  # "left" / "right": the hitter (serve, hit, net) or the half of the court (bounce, line_*)
    frame: int = -1  # the labelled frame, set once the rally is placed in the video


@dataclass
class Light:
    """The umpire light after a baseline bounce (``call`` set) or a distractor flash (``call`` None)."""

    start: int  # first lit frame
    stop: int  # first frame after it
    colour: tuple[float, float, float]
    call: str | None = None  # line_in / line_out
    contact_index: int = -1  # the call's contact in SimulatedVideo.contacts


@dataclass
class PlayerTrack:
    """One player: body position and paddle height keyframes (smoothstep in between) and contact times."""

    side: int  # +1 = left player (plays towards +x), -1 = right player
    keys: list[tuple[float, float, float]] = field(default_factory=list)  # (time, body_x, paddle_y)
    contacts: list[float] = field(default_factory=list)  # swing centre times
    sway_phase: float = 0.0


@dataclass
class VideoSpec:
    """What the split planner decides for one video; everything else comes from ``seed``."""

    name: str
    seed: int
    num_frames: int
    endings: list[str]  # one per rally: line_in | line_out | net


@dataclass
class SimulatedVideo:
    """One generated video with the generator's own state, for tests and for writing the dataset."""

    spec: VideoSpec
    fps: float
    width: int
    height: int
    segments: list[Segment]  # the ball, in time order; not in play outside them
    contacts: list[Contact]  # every physical contact, each one labelled
    lights: list[Light]
    players: list[PlayerTrack]
    frames: np.ndarray | None = None  # (N, H, W, 3) uint8 when rendered

    @property
    def num_frames(self) -> int:
        return self.spec.num_frames

    def ball_position(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Ball centre at time(s) ``t``; NaN where the ball is not in play."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        x = np.full(t.shape, np.nan)
        y = np.full(t.shape, np.nan)
        for seg in self.segments:
            mask = (t >= seg.t0) & (t < seg.t1)
            if mask.any():
                x[mask], y[mask] = seg.position(t[mask])
        return x, y

    def ball_per_frame(self) -> np.ndarray:
        """(N, 2) ball centre at every frame time; NaN rows where the ball is not in play."""
        x, y = self.ball_position(np.arange(self.num_frames) / self.fps)
        return np.stack([x, y], axis=1)

    def to_video(self) -> Video:
        """The labels of this video (E2E-Spot split entry)."""
        events = [Event(frame=c.frame, label=c.label, comment=c.side)
                  for c in sorted(self.contacts, key=lambda c: (c.frame, CLASSES.index(c.label)))]
        return Video(video=self.spec.name, num_frames=self.num_frames, fps=self.fps, events=events,
                     extra={"width": self.width, "height": self.height})


# ------------------------------------------------------------------------------------------------------------
# Planning a split


def _rallies_for(num_frames: int, preset: Preset) -> int:
    return max(1, int(num_frames / preset.fps // preset.rally_seconds))


def plan_split(preset: Preset, seed: int, split: str) -> list[VideoSpec]:
    """The videos of one split: names, lengths, per-video seeds and each rally's ending.

    The endings are dealt from a shuffled deck with exact proportions (``net_fraction`` net, the rest half
    ``line_in`` / half ``line_out``), so the class balance of a split does not depend on luck.
    """
    rng = np.random.default_rng([seed, split_id(split), 7919])
    count = preset.videos[split]
    lengths = rng.integers(preset.num_frames[0], preset.num_frames[1] + 1, size=count)
    seeds = rng.integers(0, 2**62, size=count)
    rallies = [_rallies_for(int(n), preset) for n in lengths]
    total = sum(rallies)
    n_net = round(total * preset.net_fraction)
    if preset.net_fraction > 0:
        n_net = max(1, n_net)
    n_in = (total - n_net + int(rng.integers(0, 2))) // 2
    deck = ["net"] * n_net + ["line_in"] * n_in + ["line_out"] * (total - n_net - n_in)
    deck = [deck[i] for i in rng.permutation(total)]
    specs, pos = [], 0
    for i in range(count):
        specs.append(VideoSpec(name=f"{split}_{i:04d}", seed=int(seeds[i]), num_frames=int(lengths[i]),
                               endings=deck[pos:pos + rallies[i]]))
        pos += rallies[i]
    return specs


def plan_dataset(preset: str | Preset, seed: int = 0) -> dict[str, list[VideoSpec]]:
    """Every split of a preset: split name -> video specs."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    return {split: plan_split(preset, seed, split) for split in preset.videos}


# ------------------------------------------------------------------------------------------------------------
# Physics: one rally in relative time, in "mirrored" coordinates where the hitter plays towards +x


def _mirror(x: float, d: int) -> float:
    return x if d > 0 else 1.0 - x


def _parabola(x0: float, y0: float, x1: float, y1: float, dt: float) -> tuple[float, float]:
    """Velocities (vx, vy) of the ballistic flight from (x0, y0) to (x1, y1) in ``dt`` seconds."""
    return (x1 - x0) / dt, (y1 - y0 + 0.5 * G * dt * dt) / dt


def _height_at_x(x0: float, y0: float, vx: float, vy: float, x: float) -> float:
    t = (x - x0) / vx
    return y0 + vy * t - 0.5 * G * t * t


def _apex(y0: float, vy: float) -> float:
    return y0 + vy * vy / (2 * G) if vy > 0 else y0


def _clears_net(x0: float, y0: float, vx: float, vy: float, margin: float = 0.015) -> bool:
    # The parabola's lowest point over the net's x-extent is at one of its ends (it is concave).
    ends = (NET_X - NET_W / 2 - BALL_R, NET_X + NET_W / 2 + BALL_R)
    return all(_height_at_x(x0, y0, vx, vy, x) > NET_H + BALL_R + margin for x in ends)


class _Rally:
    """Builds one rally's ball segments and contacts in relative time, in mirrored court coordinates."""

    def __init__(self, rng: np.random.Generator, server: int, fps: float):
        self.rng = rng
        self.fps = fps
        self.server = server  # +1 left, -1 right
        self.segments: list[tuple[Segment, int]] = []  # (segment in mirrored coords of side d, d)
        self.contacts: list[tuple[Contact, int]] = []
        self.player_keys: dict[int, list[tuple[float, float, float]]] = {1: [], -1: []}
        self.player_contacts: dict[int, list[float]] = {1: [], -1: []}
        self.light: tuple[int, int, str, int] | None = None  # (delay frames, frames on, call, contact index)
        self.end_time = 0.0

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def add_flight(self, t0: float, x0: float, y0: float, vx: float, vy: float, t1: float, d: int) -> None:
        self.segments.append((Segment(t0, t1, x0, y0, vx, vy, G), d))

    def add_contact(self, t: float, label: str, x: float, y: float, d: int, side_of: int) -> None:
        side = "left" if side_of > 0 else "right"
        self.contacts.append((Contact(time=t, label=label, x=x, y=y, side=side), d))

    def hit_keys(self, d: int, t: float, x: float, y: float) -> None:
        """The player of side ``d`` meets the ball at mirrored (x, y) at time t."""
        self.player_keys[d].append((t, _mirror(x - CONTACT_OFFSET, d), y))
        self.player_contacts[d].append(t)

    def serve(self) -> tuple[float, float, float]:
        """Ball in hand, toss, serve contact. Returns (t, x, y) of the serve contact (mirrored for the server)."""
        d = self.server
        wait = self.u(0.3, 0.8)
        toss = self.u(0.45, 0.65)
        xc, yc = self.u(0.11, 0.14), self.u(0.36, 0.46)
        body = xc - CONTACT_OFFSET
        x_hand = body + PADDLE_OFFSET * 0.8
        t_toss = wait
        tc = wait + toss
        self.segments.append((Segment(0.0, t_toss, x_hand, HAND_Y), d))  # held in the hand
        vx, vy = _parabola(x_hand, HAND_Y, xc, yc, toss)
        self.add_flight(t_toss, x_hand, HAND_Y, vx, vy, tc, d)
        self.player_keys[d].append((0.0, _mirror(body, d), READY_PADDLE_Y))
        self.player_keys[d].append((t_toss, _mirror(body, d), READY_PADDLE_Y))
        self.hit_keys(d, tc, xc, yc)
        self.add_contact(tc, "serve", xc, yc, d, d)
        self.player_keys[-d].append((0.0, _mirror(1.0 - READY_X - 0.02, d), READY_PADDLE_Y))
        return tc, xc, yc

    def rally_shot(self, d: int, t0: float, x0: float, y0: float, serve: bool) -> tuple[float, float, float]:
        """A shot by side ``d`` that bounces in the other half and is hit back. Returns the return contact."""
        for _ in range(500):
            xb = self.u(0.56, 0.70) if serve else self.u(0.57, 0.74)
            dt = self.u(0.45, 0.70) if serve else self.u(0.50, 0.80)
            vx, vy = _parabola(x0, y0, xb, BALL_R, dt)
            if not _clears_net(x0, y0, vx, vy) or _apex(y0, vy) > Y_MAX:
                continue
            vy_in = vy - G * dt
            restitution, friction = self.u(0.62, 0.75), self.u(0.85, 0.95)
            vx2, vy2 = vx * friction, -vy_in * restitution
            x_hit = self.u(max(xb + 0.07, 0.70), 0.88)
            dt2 = (x_hit - xb) / vx2
            y_hit = BALL_R + vy2 * dt2 - 0.5 * G * dt2 * dt2
            if not (0.07 <= y_hit <= 0.40 and dt2 >= 0.16):
                continue
            tb, th = t0 + dt, t0 + dt + dt2
            self.add_flight(t0, x0, y0, vx, vy, tb, d)
            self.add_contact(tb, "bounce", xb, BALL_R, d, -d)
            self.add_flight(tb, xb, BALL_R, vx2, vy2, th, d)
            self.add_contact(th, "hit", x_hit, y_hit, d, -d)
            self.hit_keys(-d, th, 1.0 - x_hit, y_hit)
            # Returned: in the receiver's own mirrored coordinates.
            return th, 1.0 - x_hit, y_hit
        raise RuntimeError("synthetic: no valid rally shot found (generator bug)")

    def lob_to_baseline(self, d: int, t0: float, x0: float, y0: float, call: str) -> None:
        """The rally's last shot: a deep lob over the receiver, landing on the baseline, then out of the frame."""
        receiver_x = 0.74  # mirrored (shooter's frame): the receiver has come forward and is passed by the lob
        for _ in range(500):
            xb = BASELINE + self.u(-0.006, 0.006)
            dt = self.u(1.0, 1.35)
            vx, vy = _parabola(x0, y0, xb, BALL_R, dt)
            if not _clears_net(x0, y0, vx, vy) or _apex(y0, vy) > Y_MAX:
                continue
            if min(_height_at_x(x0, y0, vx, vy, receiver_x + s) for s in (-0.06, 0.0, 0.04)) < 0.32:
                continue  # would touch the receiver
            vy_in = vy - G * dt
            vx2, vy2 = vx * self.u(0.85, 0.95), -vy_in * self.u(0.62, 0.75)
            t_exit = (1.0 + EXIT_MARGIN - xb) / vx2
            if t_exit >= 2 * vy2 / G * 0.9:
                continue  # must leave the frame before touching the ground again
            tb = t0 + dt
            self.add_flight(t0, x0, y0, vx, vy, tb, d)
            self.add_contact(tb, call, xb, BALL_R, d, -d)
            self.add_flight(tb, xb, BALL_R, vx2, vy2, tb + t_exit, d)
            delay = int(self.rng.integers(LIGHT_DELAY[0], LIGHT_DELAY[1] + 1))
            on = int(self.rng.integers(LIGHT_FRAMES[0], LIGHT_FRAMES[1] + 1))
            self.light = (delay, on, call, len(self.contacts) - 1)
            self.end_time = max(tb + t_exit, tb + (delay + on + 2) / self.fps)
            # the receiver gives up: back to the ready position while the lob flies over
            self.player_keys[-d].append((t0 + 0.3, _mirror(receiver_x, d), READY_PADDLE_Y))
            return
        raise RuntimeError("synthetic: no valid lob found (generator bug)")

    def into_net(self, d: int, t0: float, x0: float, y0: float) -> None:
        """The rally's last shot: the ball hits the net's face and stays caught in the mesh for a moment."""
        xn = NET_X - NET_W / 2 - BALL_R
        for _ in range(500):
            yn = self.u(BALL_R + 0.02, NET_H - 0.015)
            dt = self.u(0.35, 0.60)
            vx, vy = _parabola(x0, y0, xn, yn, dt)
            if _apex(y0, vy) > Y_MAX:
                continue
            tn = t0 + dt
            self.add_flight(t0, x0, y0, vx, vy, tn, d)
            self.add_contact(tn, "net", xn, yn, d, d)
            self.segments.append((Segment(tn, tn + STUCK_S, xn, yn), d))
            self.end_time = tn + STUCK_S
            return
        raise RuntimeError("synthetic: no valid net shot found (generator bug)")


def _plan_rally(seed: int, server: int, returns: int, ending: str, fps: float) -> _Rally:
    """One rally in relative time: serve, ``returns`` hits (each after a bounce), then the ending shot."""
    rally = _Rally(np.random.default_rng(seed), server, fps)
    t, x, y = rally.serve()
    d = server
    for k in range(returns):
        t, x, y = rally.rally_shot(d, t, x, y, serve=(k == 0))
        d = -d
    if ending == "net":
        rally.into_net(d, t, x, y)
    else:
        rally.lob_to_baseline(d, t, x, y, ending)
    rally.end_time += rally.u(0.2, 0.6)  # players relax before the next rally
    return rally


# ------------------------------------------------------------------------------------------------------------
# One video


def _to_world(seg: Segment, d: int) -> Segment:
    if d > 0:
        return seg
    return Segment(seg.t0, seg.t1, 1.0 - seg.x0, seg.y0, -seg.vx, seg.vy, seg.gravity)


def simulate_video(spec: VideoSpec, preset: str | Preset = "tiny", *, render: bool = True,
                   flip_call: int | None = None) -> SimulatedVideo:
    """Simulate (and optionally render) one video from its spec.

    ``flip_call=k`` turns the k-th baseline call (in time order) from in to out or back; nothing else changes
    (every random draw is the same), which is how the tests check the long-range pair.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    fps = preset.fps
    rng = np.random.default_rng([spec.seed, 1])  # physics
    duration = spec.num_frames / fps
    n = len(spec.endings)
    rally_seeds = [int(s) for s in rng.integers(0, 2**62, size=n)]
    servers = [1 if b else -1 for b in rng.integers(0, 2, size=n)]
    mean = preset.mean_returns
    returns = [min(int(rng.geometric(1.0 / (mean + 1.0))) - 1, 12) for _ in range(n)]
    margin = 0.3  # seconds kept free at each end of the video

    def plan_all() -> list[_Rally]:
        return [_plan_rally(rally_seeds[i], servers[i], returns[i], spec.endings[i], fps) for i in range(n)]

    rallies = plan_all()
    # Shorten the longest rallies until everything fits (a rally is cut one exchange = two shots at a time).
    while sum(r.end_time for r in rallies) > duration - 2 * margin:
        i = int(np.argmax(returns))
        if returns[i] == 0:
            raise PespotError(f"synthetic video '{spec.name}': {n} rallies do not fit in {spec.num_frames} "
                              f"frames (preset too short)")
        returns[i] = max(0, returns[i] - 2)
        rallies[i] = _plan_rally(rally_seeds[i], servers[i], returns[i], spec.endings[i], fps)
    slack = duration - 2 * margin - sum(r.end_time for r in rallies)
    gaps = rng.dirichlet(np.ones(n + 1)) * slack

    segments: list[Segment] = []
    contacts: list[Contact] = []
    lights: list[Light] = []
    players = [PlayerTrack(side=1, sway_phase=float(rng.uniform(0, 2 * math.pi))),
               PlayerTrack(side=-1, sway_phase=float(rng.uniform(0, 2 * math.pi)))]
    ready = {1: READY_X, -1: 1.0 - READY_X}
    for p in players:
        p.keys.append((0.0, ready[p.side], READY_PADDLE_Y))
    offset = margin + gaps[0]
    pending_lights = []
    calls = 0
    for i, rally in enumerate(rallies):
        first_contact = len(contacts)
        for seg, d in rally.segments:
            w = _to_world(seg, d)
            segments.append(Segment(w.t0 + offset, w.t1 + offset, w.x0, w.y0, w.vx, w.vy, w.gravity))
        for c, d in rally.contacts:
            contacts.append(Contact(time=c.time + offset, label=c.label, x=_mirror(c.x, d), y=c.y, side=c.side))
        for p in players:
            keys = sorted(rally.player_keys[p.side])
            # back to the ready position between rallies and between this player's shots
            times = [k[0] for k in keys]
            for a, b in itertools.pairwise(times):
                if b - a > 0.6:
                    keys.append(((a + b) / 2, ready[p.side], READY_PADDLE_Y))
            keys.append((rally.end_time, ready[p.side], READY_PADDLE_Y))
            p.keys.extend((t + offset, x, y) for t, x, y in sorted(keys))
            p.contacts.extend(t + offset for t in rally.player_contacts[p.side])
        if rally.light is not None:
            delay, on, call, idx = rally.light
            if flip_call is not None and calls == flip_call:
                call = "line_out" if call == "line_in" else "line_in"
                contacts[first_contact + idx].label = call
            pending_lights.append((first_contact + idx, delay, on, call))
            calls += 1
        offset += rally.end_time + gaps[i + 1]
    for p in players:
        p.keys.sort()

    video = SimulatedVideo(spec=spec, fps=fps, width=preset.size, height=preset.size, segments=segments,
                           contacts=contacts, lights=lights, players=players)
    for c in contacts:
        c.frame = event_frame(c.time, (c.x, c.y), video.ball_position, fps)
        if not 0 <= c.frame < spec.num_frames:
            raise RuntimeError(f"synthetic: event outside video {spec.name} (generator bug)")
    for idx, delay, on, call in pending_lights:
        start = contacts[idx].frame + delay
        lights.append(Light(start=start, stop=start + on, colour=LIGHT_COLOURS[call], call=call,
                            contact_index=idx))
    if preset.distractors:
        lights.extend(_flashes(np.random.default_rng([spec.seed, 2]), spec.num_frames, lights))
    lights.sort(key=lambda light: light.start)
    if render:
        video.frames = _render(video, preset, np.random.default_rng([spec.seed, 3]))
    return video


def _flashes(rng: np.random.Generator, num_frames: int, calls: list[Light]) -> list[Light]:
    """Scoreboard flashes in colours that are not calls, away from the calls."""
    out: list[Light] = []
    for _ in range(int(rng.integers(0, 3))):
        length = int(rng.integers(8, 20))
        start = int(rng.integers(0, max(1, num_frames - length)))
        colour = FLASH_COLOURS[int(rng.integers(0, len(FLASH_COLOURS)))]
        busy = calls + out
        if all(start + length + 3 < c.start or start > c.stop + 3 for c in busy):
            out.append(Light(start=start, stop=min(num_frames, start + length), colour=colour))
    return out


# ------------------------------------------------------------------------------------------------------------
# Rendering (float32 RGB in [0, 1], soft-edged shapes so sub-pixel motion is visible)


class _Canvas(Canvas):
    """Court units -> pixel coordinates on top of the shared drawing primitives."""

    def __init__(self, img: np.ndarray, size: int, shift_x: float = 0.0, shift_y: float = 0.0):
        super().__init__(img)
        self.size = size
        self.shift_x, self.shift_y = shift_x, shift_y

    def px(self, x: float, y: float) -> tuple[float, float]:
        """Court (x, y) -> (column, row) in pixel units, pixel centres at +0.5."""
        return x * self.size + self.shift_x, GROUND_ROW * self.size - y * self.size + self.shift_y

    def disc(self, x: float, y: float, radius: float, colour, opacity: float = 1.0, squash: float = 1.0) -> None:
        """A filled disc (ellipse when ``squash`` < 1: vertical radius * squash) of court radius ``radius``."""
        cx, cy = self.px(x, y)
        self.disc_px(cx, cy, radius * self.size, colour, opacity, squash)

    def segment(self, xa: float, ya: float, xb: float, yb: float, half_width: float, colour) -> None:
        """A thick line between two court points (``half_width`` in court units)."""
        (ca, ra), (cb, rb) = self.px(xa, ya), self.px(xb, yb)
        self.segment_px(ca, ra, cb, rb, half_width * self.size, colour)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour, pixel: bool = False) -> None:
        """A filled rectangle with exact fractional coverage at its edges (court units, or pixels)."""
        if pixel:
            self.rect_px(x0, y0, x1, y1, colour)
        else:
            (c_lo, r_hi), (c_hi, r_lo) = self.px(x0, y0), self.px(x1, y1)
            self.rect_px(c_lo, r_lo, c_hi, r_hi, colour)


@dataclass
class _Look:
    """Per-video appearance."""

    court: tuple
    line: tuple
    stands: tuple
    wall: tuple
    ball: tuple
    shirts: tuple
    skin: tuple
    noise: float
    shake: np.ndarray  # (N, 2) integer pixel offsets (dx, dy)
    background: np.ndarray  # (H + 2S, W + 2S, 3) static scene on a margin of S pixels for the shake
    margin: int


def _make_look(rng: np.random.Generator, preset: Preset, num_frames: int, fps: float) -> _Look:
    size = preset.size
    courts = [(0.25, 0.55, 0.30), (0.20, 0.35, 0.65), (0.72, 0.42, 0.25), (0.45, 0.30, 0.55), (0.40, 0.45, 0.42)]
    balls = [(0.92, 0.95, 0.25), (0.97, 0.97, 0.97), (1.0, 0.62, 0.12)]
    court = jitter(rng, courts[int(rng.integers(len(courts)))])
    stands = jitter(rng, (0.22, 0.22, 0.26), 0.10)
    wall = jitter(rng, [(0.1, 0.25, 0.5), (0.5, 0.15, 0.15), (0.15, 0.4, 0.2)][int(rng.integers(3))])
    ball = jitter(rng, balls[int(rng.integers(len(balls)))], 0.04)
    hues = rng.permutation(6)[:2]
    palette = [(0.9, 0.2, 0.2), (0.2, 0.4, 0.95), (0.95, 0.6, 0.1), (0.6, 0.2, 0.8), (0.1, 0.75, 0.75),
               (0.95, 0.95, 0.95)]
    shirts = tuple(jitter(rng, palette[int(h)], 0.05) for h in hues)
    skin = jitter(rng, (0.85, 0.65, 0.5), 0.08)
    noise = float(rng.uniform(*preset.noise)) / 255.0 if preset.distractors else 0.0
    # Camera shake: two slow sinusoids per axis, rounded to whole pixels.
    amp = int(rng.integers(0, preset.shake_px + 1)) if preset.distractors else 0
    t = np.arange(num_frames) / fps
    shake = np.zeros((num_frames, 2), dtype=np.int64)
    if amp:
        for axis in range(2):
            f1, f2 = rng.uniform(0.3, 1.2), rng.uniform(1.5, 3.0)
            p1, p2 = rng.uniform(0, 2 * math.pi, 2)
            wave = 0.7 * np.sin(2 * math.pi * f1 * t + p1) + 0.3 * np.sin(2 * math.pi * f2 * t + p2)
            shake[:, axis] = np.round(amp * wave).astype(np.int64)
    margin = preset.shake_px
    bg = _background(rng, size, margin, court, stands, wall)
    return _Look(court, (0.95, 0.95, 0.92), stands, wall, ball, shirts, skin, noise, shake, bg, margin)


def _background(rng, size: int, margin: int, court, stands, wall) -> np.ndarray:
    """Static scene (stands with a crowd, advertising wall, court with baselines, net) on a shake margin."""
    full = size + 2 * margin
    img = np.empty((full, full, 3), dtype=np.float32)
    ground = GROUND_ROW * size + margin
    rows = np.arange(full, dtype=np.float32)[:, None]
    # stands: vertical gradient plus a blotchy crowd of muted colours
    img[:] = np.asarray(stands, dtype=np.float32) * (0.8 + 0.4 * rows / full)[..., None]
    cell = max(2, size // 21)
    crowd = rng.uniform(-0.07, 0.07, size=(full // cell + 1, full // cell + 1, 3)).astype(np.float32)
    crowd = np.repeat(np.repeat(crowd, cell, 0), cell, 1)[:full, :full]
    wall_top = ground - 0.11 * size
    img[: int(wall_top)] += crowd[: int(wall_top)]
    canvas = _Canvas(img, size, margin, margin)
    # advertising wall with a few coloured boards
    canvas.rect(-1, 0.0, 2, 0.11, wall)
    for _ in range(3):
        x0 = float(rng.uniform(-0.1, 0.9))
        canvas.rect(x0, 0.025, x0 + float(rng.uniform(0.08, 0.2)), 0.085, jitter(rng, wall, 0.25))
    # court: the ground band below the ground line, slightly darker far away
    img[int(ground):] = np.asarray(court, dtype=np.float32)
    canvas.rect(-1, -1, 2, 0.0, court)
    for x in (1.0 - BASELINE, BASELINE):
        canvas.rect(x - 0.008, -0.2, x + 0.008, 0.0, (0.95, 0.95, 0.92))
    # net: dark mesh between two posts, white tape on top
    canvas.rect(NET_X - NET_W / 2, 0.0, NET_X + NET_W / 2, NET_H, (0.15, 0.15, 0.15))
    canvas.rect(NET_X - NET_W / 2 - 0.004, NET_H - 0.012, NET_X + NET_W / 2 + 0.004, NET_H + 0.006,
                (0.95, 0.95, 0.95))
    return np.clip(img, 0, 1)


def _smoothstep_keys(keys: list[tuple[float, float, float]], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate (body_x, paddle_y) keyframes at times ``t`` with smoothstep easing."""
    times = np.array([k[0] for k in keys])
    xs = np.array([k[1] for k in keys])
    ys = np.array([k[2] for k in keys])
    idx = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(keys) - 1)
    nxt = np.minimum(idx + 1, len(keys) - 1)
    span = times[nxt] - times[idx]
    s = np.where(span > 0, np.clip((t - times[idx]) / np.where(span > 0, span, 1), 0, 1), 0.0)
    s = s * s * (3 - 2 * s)
    return xs[idx] + s * (xs[nxt] - xs[idx]), ys[idx] + s * (ys[nxt] - ys[idx])


def _swing_angle(contacts: list[float], t: np.ndarray) -> np.ndarray:
    """Paddle angle from vertical: back (-max) when waiting, through 0 at contact, then back again."""
    angle = np.full(t.shape, -SWING_ANGLE)
    for tc in contacts:
        u = (t - tc) / SWING_S
        a = np.where(np.abs(u) <= 1, u * SWING_ANGLE, np.where((u > 1) & (u <= 3), (2 - u) * SWING_ANGLE, np.nan))
        angle = np.where(np.isnan(a), angle, a)
    return angle


def _render(video: SimulatedVideo, preset: Preset, rng: np.random.Generator) -> np.ndarray:
    """All frames of a simulated video: uint8 (N, H, W, 3)."""
    size, num_frames, fps = preset.size, video.num_frames, video.fps
    look = _make_look(rng, preset, num_frames, fps)
    times = np.arange(num_frames) / fps
    ball = video.ball_per_frame()
    bodies = []
    for p in video.players:
        bx, py = _smoothstep_keys(p.keys, times)
        bx = bx + 0.008 * np.sin(2 * math.pi * 0.7 * times + p.sway_phase)  # idle sway: motion, not an event
        bodies.append((p.side, bx, py, _swing_angle(p.contacts, times)))
    bird, crowd_ball = _distractor_paths(rng, num_frames, fps, preset.distractors)
    crowd_colour = jitter(rng, look.ball, 0.2)
    light_colour = np.zeros((num_frames, 3), dtype=np.float32) + np.asarray(LIGHT_OFF, dtype=np.float32)
    for light in video.lights:
        light_colour[light.start:light.stop] = light.colour
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    m = look.margin
    shadow = tuple(c * 0.55 for c in look.court)
    for n in range(num_frames):
        dx, dy = int(look.shake[n, 0]), int(look.shake[n, 1])
        img = look.background[m - dy: m - dy + size, m - dx: m - dx + size].copy()
        canvas = _Canvas(img, size, float(dx), float(dy))
        if not np.isnan(bird[n, 0]):
            bx_, by_ = bird[n]
            flap = 0.03 if (n // 3) % 2 else -0.02
            canvas.segment(bx_ - 0.035, by_ + flap, bx_, by_, 0.008, (0.08, 0.08, 0.1))
            canvas.segment(bx_, by_, bx_ + 0.035, by_ + flap, 0.008, (0.08, 0.08, 0.1))
        if not np.isnan(crowd_ball[n, 0]):
            canvas.disc(crowd_ball[n, 0], crowd_ball[n, 1], BALL_R * 0.7, crowd_colour)
        for (side, bx, py, angle), shirt in zip(bodies, look.shirts):
            _draw_player(canvas, side, float(bx[n]), float(py[n]), float(angle[n]), shirt, look.skin)
        if not np.isnan(ball[n, 0]):
            x, y = ball[n]
            # shadow on the court, sharper and darker as the ball comes down
            canvas.disc(x, -0.025, BALL_R * 1.1, shadow, opacity=float(np.clip(0.8 - 1.2 * y, 0.25, 0.8)),
                        squash=0.35)
            canvas.disc(x, y, BALL_R, look.ball)
        # scoreboard overlay: fixed on screen (not shaken)
        overlay = _Canvas(img, size)
        overlay.rect(0.40 * size, 0.02 * size, 0.60 * size, 0.12 * size, (0.05, 0.05, 0.05), pixel=True)
        overlay.rect(0.42 * size, 0.035 * size, 0.58 * size, 0.105 * size, light_colour[n], pixel=True)
        if look.noise > 0:
            img += rng.normal(0.0, look.noise, size=img.shape).astype(np.float32)
        frames[n] = to_uint8(img)
    return frames


def _draw_player(canvas: _Canvas, side: int, body_x: float, paddle_y: float, angle: float, shirt, skin) -> None:
    canvas.rect(body_x - 0.012, 0.0, body_x + 0.012, 0.09, (0.15, 0.15, 0.2))  # legs
    canvas.rect(body_x - 0.025, 0.08, body_x + 0.025, 0.20, shirt)  # torso
    canvas.disc(body_x, 0.225, 0.025, skin)  # head
    px = body_x + side * PADDLE_OFFSET
    canvas.segment(body_x + side * 0.015, 0.17, px, paddle_y, 0.008, skin)  # arm
    half = 0.05
    dx, dy = side * math.sin(angle) * half, math.cos(angle) * half
    canvas.segment(px - dx, paddle_y - dy, px + dx, paddle_y + dy, 0.014, (0.1, 0.1, 0.1))  # paddle


def _distractor_paths(rng: np.random.Generator, num_frames: int, fps: float,
                      enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) positions of a bird crossing the sky and of a spectator's ball hopping along the wall (NaN = absent)."""
    t = np.arange(num_frames) / fps
    bird = np.full((num_frames, 2), np.nan)
    hop = np.full((num_frames, 2), np.nan)
    if not enabled:
        return bird, hop
    for _ in range(int(rng.integers(1, 3))):
        start = rng.uniform(0, max(0.1, t[-1] - 1.0))
        speed = rng.uniform(0.25, 0.6) * (1 if rng.integers(2) else -1)
        height = rng.uniform(0.45, 0.72)
        x = (-0.1 if speed > 0 else 1.1) + speed * (t - start)
        y = height + 0.03 * np.sin(2 * math.pi * 0.8 * (t - start))
        on = (t >= start) & (x > -0.15) & (x < 1.15)
        bird[on] = np.stack([x, y], 1)[on]
    # the spectator ball: hops of random length on top of the wall (y = 0.11 + radius)
    base = 0.11 + BALL_R * 0.7
    if rng.uniform() < 0.8:
        start = rng.uniform(0, max(0.1, t[-1] - 2.0))
        vx = rng.uniform(0.15, 0.35) * (1 if rng.integers(2) else -1)
        x0 = rng.uniform(0.1, 0.9)
        hop_t = start
        while hop_t < t[-1]:
            dur = rng.uniform(0.35, 0.7)
            vy = 0.5 * G * dur
            mask = (t >= hop_t) & (t < hop_t + dur)
            dt = t[mask] - hop_t
            xs = x0 + vx * (t[mask] - start)
            hop[mask] = np.stack([xs, base + vy * dt - 0.5 * G * dt * dt], 1)
            hop_t += dur
        hop[(hop[:, 0] < -0.1) | (hop[:, 0] > 1.1)] = np.nan
    return bird, hop


# ------------------------------------------------------------------------------------------------------------
# Writing a dataset


def classes_of(preset: Preset) -> list[str]:
    """The classes of a dataset made with ``preset`` (always all six in this world)."""
    return list(CLASSES)


__all__ = ["CLASSES", "LONG_RANGE", "LONG_RANGE_PAIR", "NAME", "PRESETS", "Contact", "Light", "Preset", "Segment",
           "SimulatedVideo", "VideoSpec", "classes_of", "get_preset", "plan_dataset", "plan_split",
           "simulate_video"]
