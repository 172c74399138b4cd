"""The ``court-top`` world: tennis seen from high behind the court, with cues of broadcast size.

Why a second world: the first one (``rally_side``) has large cues (a ball of radius 2.6 px at 64 px, players a
quarter of the frame high). In a broadcast of a ball sport the decisive cue is small: the ball is 1-3 px in a
64 px frame, players are a few pixels tall, and lighting, colours and distractors change from video to video.
This world is made apart from the first one (its own geometry, camera, physics, look and classes) so that a recipe
that learns on both is not fitted to one generator.

* **scene** -- a tennis court in metres (``x`` across, ``y`` from the near baseline to the far one, ``z`` up),
  seen by a pinhole camera placed high behind the near baseline (its height, distance, side offset and zoom are
  drawn per video); the ball is drawn 1-3 px across with motion blur and a shadow, players a few px tall with a
  racket of one pixel; the background (court, lines, net, back wall, stands) is ray-cast and supersampled;
* **events decided by the ball's motion** -- ``serve``, ``hit`` (after a bounce), ``volley`` (before a bounce),
  ``bounce`` (in the court), ``out`` (a rally's last shot landing beyond a line), ``net`` (the last shot caught
  in the net; rare) and ``winner``;
* **long-range class** -- ``winner`` is the bounce of a deep, high-kicking lob that the receiver, who runs back and
  swings, fails to return; the same lob returned is a ``bounce`` followed by a ``hit``. Both are identical until
  the receiver's contact 25-40 frames after the bounce (``LONG_DELAY``): only the ball's motion then (reversed or
  not) tells them apart. Deep lobs returned are dealt as often as winners;
* **distractors** -- ball kids running along the back, a spectator's ball bouncing beside the court, a bird and its
  shadow, cloud shadows drifting over the court, players moving between shots, a slow camera pan, per-video light
  level, colour cast and gradient, sensor noise.

Labels are exact by construction: a contact happens at a continuous time and is labelled at the frame, of the two
around it, that shows the ball nearest to the contact point (``common.event_frame``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pespot.data.labels import Event, Video
from pespot.data.synthetic.common import Canvas, deal, event_frame, jitter, split_id, to_uint8
from pespot.errors import PespotError

NAME = "court-top"
GENERATOR_VERSION = 1  # bump when the output for a given (preset, seed) changes
CLASSES = ["serve", "hit", "volley", "bounce", "out", "net", "winner"]
LONG_RANGE = ("winner",)  # decided only LONG_DELAY frames after its frame
LONG_DELAY = (25, 40)  # frames from a deep lob's bounce to the receiver's contact (returned or missed)

# Court geometry (metres)
G = 9.81
LENGTH, SINGLES, DOUBLES = 23.77, 8.23, 10.97  # court length, singles and doubles widths
NET_Y = LENGTH / 2
SERVICE = 6.40  # service line, from the net
NET_CENTRE, NET_POST = 0.914, 1.07  # net height at the centre and at the posts
POST_X = DOUBLES / 2 + 0.91
BALL_R = 0.033  # the physical ball (contacts, bounces)
LINE_W = 0.10  # painted lines (real lines are 5 cm: doubled so that a 64 px frame still shows them)
FENCE_BACK = 5.5  # the back fences, behind each baseline: a ball reaching one is out of play
FENCE_SIDE = DOUBLES / 2 + 3.2
WALL_Y = LENGTH + 6.0  # the far back wall (boards, then stands above it)
WALL_H = 2.2
STUCK_S = 0.4  # a ball caught in the net stays visible this long
REACH = 0.75  # sideways distance from a player's body to the ball at a groundstroke


# ------------------------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class Preset:
    """Sizes and difficulty of a court-top dataset."""

    name: str
    videos: dict[str, int]  # split -> number of videos
    num_frames: tuple[int, int]  # frames per video, inclusive range
    size: int = 64  # frames are size x size pixels
    fps: float = 25.0
    mean_returns: float = 4.0  # returns per rally (geometric), before fitting into the video
    net_fraction: float = 0.05  # rallies that end in the net; the rest end half with a winner, half out
    volley_p: float = 0.15  # a return is a volley (taken before the bounce) with this probability
    rally_seconds: float = 10.0  # rallies per video = max(1, seconds // rally_seconds)
    ball_px: tuple[float, float] = (1.0, 3.0)  # drawn ball diameter at 64 px: far end, near end (scaled with size)
    noise: tuple[float, float] = (2.0, 6.0)  # sensor noise sigma range (0-255 scale)
    pan_px: int = 2  # largest camera pan (whole pixels at 64 px)
    distractors: bool = True
    classes: tuple[str, ...] = tuple(CLASSES)  # labelled classes; events of the others happen but are not labelled
    description: str = ""


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", {"train": 6, "val": 2, "test": 2}, (200, 230), net_fraction=0.2, mean_returns=2.0,
                   description="tests: 10 short videos, one rally each"),
    "small": Preset("small", {"train": 48, "val": 10, "test": 12}, (280, 320), net_fraction=0.06,
                    rally_seconds=7.0, description="the demo's size: 48/10/12 videos of 11-13 s"),
    "bench": Preset("bench", {"train": 200, "val": 40, "test": 60}, (480, 560), net_fraction=0.04,
                    description="a larger benchmark (net rarer than 0.5 % of events)"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (a PespotError lists the known ones)."""
    if name not in PRESETS:
        raise PespotError(f"unknown court-top preset '{name}' (expected one of: {', '.join(PRESETS)})")
    return PRESETS[name]


def classes_of(preset: Preset) -> list[str]:
    """The labelled classes of a dataset made with ``preset``, in ``CLASSES`` order."""
    unknown = [c for c in preset.classes if c not in CLASSES]
    if unknown or not preset.classes:
        raise PespotError(f"court-top preset '{preset.name}': classes {unknown or '()'} (expected a non-empty "
                          f"subset of {', '.join(CLASSES)})")
    return [c for c in CLASSES if c in preset.classes]


# ------------------------------------------------------------------------------------------------------------
# The generator's state


@dataclass
class Segment:
    """The ball between two moments: a flight under gravity, or at rest (held, caught in the net)."""

    t0: float
    t1: float
    p0: tuple[float, float, float]
    v: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gravity: float = 0.0

    def position(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ball centre at time(s) ``t`` (metres), extrapolating the same motion outside [t0, t1]."""
        dt = np.asarray(t, dtype=np.float64) - self.t0
        return (self.p0[0] + self.v[0] * dt, self.p0[1] + self.v[1] * dt,
                self.p0[2] + self.v[2] * dt - 0.5 * self.gravity * dt * dt)

    def at(self, t: float) -> tuple[float, float, float]:
        x, y, z = self.position(t)
        return float(x), float(y), float(z)

    def velocity(self, t: float) -> tuple[float, float, float]:
        return self.v[0], self.v[1], self.v[2] - self.gravity * (t - self.t0)


@dataclass
class Contact:
    """A physical event: the ball meets a racket, the ground or the net at a continuous time."""

    time: float
    label: str
    point: tuple[float, float, float]  # ball centre at contact
    side: str  # "near" / "far": the hitter (serve, hit, volley, net) or the half of the court (bounce, out, winner)
    frame: int = -1
    deep: bool = False  # the bounce of a deep lob (a winner, or a bounce whose return comes LONG_DELAY later)


@dataclass
class PlayerTrack:
    """One player: ground position keyframes (smoothstep in between) and the times of its swings."""

    side: int  # +1 near (plays towards +y), -1 far
    keys: list[tuple[float, float, float]] = field(default_factory=list)  # (time, x, y)
    swings: list[tuple[float, str]] = field(default_factory=list)  # (contact time, "serve" | "stroke")


@dataclass
class VideoSpec:
    """What the split planner decides for one video; everything else comes from ``seed``."""

    name: str
    seed: int
    num_frames: int
    endings: list[str]  # one per rally: winner | out | net
    deep_returns: list[int]  # one per rally: deep lobs that are returned (look-alikes of a winner), 0 or 1


@dataclass
class SimulatedVideo:
    """One generated video with the generator's own state, for tests and for writing the dataset."""

    spec: VideoSpec
    fps: float
    width: int
    height: int
    classes: list[str]
    segments: list[Segment]
    contacts: list[Contact]
    players: list[PlayerTrack]
    frames: np.ndarray | None = None  # (N, H, W, 3) uint8 when rendered
    camera: Camera | None = None  # set when rendered
    pan: np.ndarray | None = None  # (N, 2) whole-pixel camera pan (columns, rows) when rendered

    @property
    def num_frames(self) -> int:
        return self.spec.num_frames

    def ball_pixels(self) -> np.ndarray:
        """(N, 2) the ball's centre in the frames as (column, row) pixels (NaN where not in play); after render."""
        if self.camera is None or self.pan is None:
            raise PespotError("court-top: ball_pixels() needs a rendered video")
        col, row, _ = self.camera.project(*self.ball_per_frame().T)
        return np.stack([col + self.pan[:, 0], row + self.pan[:, 1]], axis=1)

    def ball_position(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ball centre at time(s) ``t``; NaN where the ball is not in play."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        out = [np.full(t.shape, np.nan) for _ in range(3)]
        for seg in self.segments:
            mask = (t >= seg.t0) & (t < seg.t1)
            if mask.any():
                for axis, values in enumerate(seg.position(t[mask])):
                    out[axis][mask] = values
        return out[0], out[1], out[2]

    def ball_per_frame(self) -> np.ndarray:
        """(N, 3) ball centre at every frame time; NaN rows where the ball is not in play."""
        return np.stack(self.ball_position(np.arange(self.num_frames) / self.fps), axis=1)

    def to_video(self) -> Video:
        """The labels of this video (E2E-Spot split entry): the contacts of the labelled classes."""
        kept = [c for c in self.contacts if c.label in self.classes]
        events = [Event(frame=c.frame, label=c.label, comment=c.side)
                  for c in sorted(kept, key=lambda c: (c.frame, CLASSES.index(c.label)))]
        return Video(video=self.spec.name, num_frames=self.num_frames, fps=self.fps, events=events,
                     extra={"width": self.width, "height": self.height})


# ------------------------------------------------------------------------------------------------------------
# Planning a split


def _rallies_for(num_frames: int, preset: Preset) -> int:
    return max(1, int(num_frames / preset.fps // preset.rally_seconds))


def plan_split(preset: Preset, seed: int, split: str) -> list[VideoSpec]:
    """The videos of one split: names, lengths, per-video seeds, each rally's ending and its deep returned lobs.

    Endings are dealt from a shuffled deck with exact proportions (``net_fraction`` net, the rest half winner,
    half out), and as many returned deep lobs as winners (fewer only when too few rallies end otherwise) are
    dealt to the other rallies, so that the long-range class and its look-alike are balanced in every split.
    """
    rng = np.random.default_rng([seed, split_id(split), 104729])
    count = preset.videos[split]
    lengths = rng.integers(preset.num_frames[0], preset.num_frames[1] + 1, size=count)
    seeds = rng.integers(0, 2**62, size=count)
    rallies = [_rallies_for(int(n), preset) for n in lengths]
    total = sum(rallies)
    n_net = max(1, round(total * preset.net_fraction)) if preset.net_fraction > 0 else 0
    n_winner = (total - n_net + int(rng.integers(0, 2))) // 2
    endings = deal(rng, {"net": n_net, "winner": n_winner, "out": total - n_net - n_winner})
    # the returned deep lobs go to the rallies that do not end with a winner (a rally holds at most one deep lob,
    # so that rallies stay short enough for short videos)
    others = [i for i, e in enumerate(endings) if e != "winner"]
    n_deep = min(n_winner, len(others))
    deep = [0] * total
    flags = deal(rng, {"1": n_deep, "0": len(others) - n_deep})
    for i, flag in zip(others, flags):
        deep[i] = int(flag)
    specs, pos = [], 0
    for i in range(count):
        k = rallies[i]
        specs.append(VideoSpec(name=f"{split}_{i:04d}", seed=int(seeds[i]), num_frames=int(lengths[i]),
                               endings=endings[pos:pos + k], deep_returns=deep[pos:pos + k]))
        pos += k
    return specs


def plan_dataset(preset: str | Preset, seed: int = 0) -> dict[str, list[VideoSpec]]:
    """Every split of a preset: split name -> video specs."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    return {split: plan_split(preset, seed, split) for split in preset.videos}


# ------------------------------------------------------------------------------------------------------------
# Physics: one rally in relative time. A shot by side d is planned in the shooter's own coordinates (its
# baseline at y = 0, playing towards +y) and stored in world coordinates (``_world``).


def _world(p: tuple[float, float, float], d: int) -> tuple[float, float, float]:
    return p if d > 0 else (-p[0], LENGTH - p[1], p[2])


def _world_v(v: tuple[float, float, float], d: int) -> tuple[float, float, float]:
    return v if d > 0 else (-v[0], -v[1], v[2])


def _flight(p0, p1, dt: float) -> tuple[float, float, float]:
    """Velocity of the ballistic flight from p0 to p1 in ``dt`` seconds."""
    return ((p1[0] - p0[0]) / dt, (p1[1] - p0[1]) / dt, (p1[2] - p0[2] + 0.5 * G * dt * dt) / dt)


def _net_height(x: float) -> float:
    return NET_CENTRE + (NET_POST - NET_CENTRE) * min(1.0, abs(x) / POST_X)


def _clears_net(p0, v, margin: float = 0.12) -> bool:
    """Whether a flight from p0 (shooter's coordinates, y < NET_Y) passes over the net with ``margin``."""
    if v[1] <= 0:
        return False
    t = (NET_Y - p0[1]) / v[1]
    x, z = p0[0] + v[0] * t, p0[2] + v[2] * t - 0.5 * G * t * t
    return z > _net_height(x) + BALL_R + margin


def _descend_time(z0: float, vz: float, z1: float) -> float | None:
    """Time for a flight starting at height z0 with vertical speed vz to come down to z1 (None: never)."""
    disc = vz * vz - 2 * G * (z1 - z0)
    return None if disc < 0 else (vz + math.sqrt(disc)) / G


class _Rally:
    """Builds one rally: ball segments, contacts and both players' keys, in relative time, world coordinates."""

    def __init__(self, rng: np.random.Generator, server: int, fps: float, preset: Preset):
        self.rng, self.server, self.fps, self.preset = rng, server, fps, preset
        self.segments: list[Segment] = []
        self.contacts: list[Contact] = []
        self.players: dict[int, PlayerTrack] = {1: PlayerTrack(1), -1: PlayerTrack(-1)}
        self.pos: dict[int, tuple[float, float]] = {}  # where each player is (time of the last key aside)
        self.last_stroke: dict[int, float] = {}  # time of each player's last contact
        self.end_time = 0.0

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    # -- bookkeeping -----------------------------------------------------------------------------------------

    def key(self, d: int, t: float, x: float, y: float) -> None:
        self.players[d].keys.append((t, x, y))
        self.pos[d] = (x, y)

    def contact(self, t: float, label: str, p, side_d: int, deep: bool = False) -> None:
        self.contacts.append(Contact(time=t, label=label, point=tuple(float(c) for c in p),
                                     side="near" if side_d > 0 else "far", deep=deep))

    def flight(self, t0: float, t1: float, p0, v) -> None:
        self.segments.append(Segment(t0, t1, tuple(p0), tuple(v), G))

    def reachable(self, d: int, t_from: float, t_to: float, x: float, y: float, speed: float = 7.5) -> bool:
        px, py = self.pos[d]
        return math.hypot(x - px, y - py) <= speed * max(t_to - t_from, 1e-6)

    def stroke(self, d: int, t_prev: float, tc: float, ball) -> bool:
        """Player d moves to meet ``ball`` (world) at ``tc`` (forehand or backhand side); False if too far."""
        reach = REACH if self.rng.random() < 0.5 else -REACH
        bx, by = ball[0] - reach * d, ball[1] - 0.25 * d
        if not self.reachable(d, t_prev, tc, bx, by):
            return False
        self.key(d, max(t_prev + 0.05, tc - 0.12), bx, by)
        self.key(d, tc, bx, by)
        self.players[d].swings.append((tc, "stroke"))
        self.last_stroke[d] = tc
        return True

    def rush(self, d: int) -> tuple[float, list, tuple[float, float]]:
        """Player d forgets its recovery after its last contact (it comes to the net instead); returns what
        ``unrush`` needs to undo it and the time from which it moves."""
        t_last = self.last_stroke.get(d, 0.0)
        keys = self.players[d].keys
        saved = (list(keys), self.pos[d])
        kept = [k for k in keys if k[0] <= t_last]
        keys[:] = kept
        self.pos[d] = kept[-1][1:] if kept else self.pos[d]
        return t_last, *saved

    def unrush(self, d: int, keys: list, pos: tuple[float, float]) -> None:
        self.players[d].keys[:] = keys
        self.pos[d] = pos

    def ready(self, d: int, t: float) -> None:
        """Player d back in its ready position behind the centre of its baseline at ``t``."""
        x, y = _world((self.u(-0.6, 0.6), -self.u(0.6, 1.4), 0.0), d)[:2]
        self.key(d, t, x, y)

    # -- shots -------------------------------------------------------------------------------------------------

    def serve(self) -> tuple[float, tuple]:
        """Ball held, tossed, struck. Returns (time, ball position) of the serve contact."""
        d = self.server
        side = 1 if self.rng.random() < 0.5 else -1  # deuce or advantage court
        xs, ys = side * self.u(0.4, 2.2), -self.u(0.2, 0.5)
        wait, toss = self.u(0.2, 0.6), self.u(0.5, 0.7)
        hand = (xs + 0.3, ys + 0.1, 1.0)
        hit = (xs + 0.2, ys + 0.35, self.u(2.5, 2.8))
        self.segments.append(Segment(0.0, wait, _world(hand, d)))
        tc = wait + toss
        p0, p1 = _world(hand, d), _world(hit, d)
        self.flight(wait, tc, p0, _flight(p0, p1, toss))
        bx, by = _world((xs, ys, 0.0), d)[:2]
        self.key(d, 0.0, bx, by)
        self.key(d, tc, bx, by)
        self.players[d].swings.append((tc, "serve"))
        self.last_stroke[d] = tc
        self.contact(tc, "serve", p1, d)
        rx, ry = _world((-side * self.u(1.5, 3.5), LENGTH + self.u(0.3, 1.2), 0.0), d)[:2]
        self.key(-d, 0.0, rx, ry)
        self.serve_side = side
        return tc, p1

    def aim(self, d: int, t0: float, p_world, target, dt: float):
        """The flight of a shot by d from p (world) to a target in d's own coordinates; None if it hits the net
        or flies too high."""
        p0 = _world(p_world, d)
        v = _flight(p0, target, dt)
        if not _clears_net(p0, v) or p0[2] + max(v[2], 0.0) ** 2 / (2 * G) > 9.0:
            return None
        return p0, v

    def rally_shot(self, d: int, t0: float, p, kind: str) -> tuple[float, tuple] | None:
        """A shot by d that the other side returns: ``normal`` (after a bounce), ``volley`` (before it), ``serve``
        (the serve's flight into the service box). Returns the return's (time, ball) or None (no valid draw)."""
        for _ in range(200):
            if kind == "serve":
                target = (-self.serve_side * self.u(0.3, SINGLES / 2 - 0.2), NET_Y + self.u(1.0, SERVICE - 0.2),
                          BALL_R)
                dt = self.u(0.55, 0.8)
            else:
                target = (self.u(-SINGLES / 2 + 0.4, SINGLES / 2 - 0.4), self.u(NET_Y + 2.5, LENGTH - 0.6), BALL_R)
                dt = self.u(0.75, 1.15)
            shot = self.aim(d, t0, p, target, dt)
            if shot is None:
                continue
            p0, v = shot
            if kind == "volley":  # the receiver, come to the net, meets the ball 1.5-5 m from it
                tv = dt * (NET_Y + self.u(1.5, 5.0) - p0[1]) / (target[1] - p0[1])
                ball = (p0[0] + v[0] * tv, p0[1] + v[1] * tv, p0[2] + v[2] * tv - 0.5 * G * tv * tv)
                if not 0.4 < ball[2] < 2.2:
                    continue
                t_from, keys, pos = self.rush(-d)
                if not self.stroke(-d, t_from, t0 + tv, _world(ball, d)):
                    self.unrush(-d, keys, pos)
                    continue
                self.flight(t0, t0 + tv, _world(p0, d), _world_v(v, d))
                self.contact(t0 + tv, "volley", _world(ball, d), -d)
                return t0 + tv, _world(ball, d)
            vz_in = v[2] - G * dt
            e, f = self.u(0.65, 0.8), self.u(0.6, 0.8)
            v2 = (v[0] * f, v[1] * f, -vz_in * e)
            dt2 = self.u(0.3, 0.6)
            ball = (target[0] + v2[0] * dt2, target[1] + v2[1] * dt2, BALL_R + v2[2] * dt2 - 0.5 * G * dt2 * dt2)
            if not (0.35 < ball[2] < 1.6 and ball[1] < LENGTH + FENCE_BACK - 1.0 and abs(ball[0]) < DOUBLES / 2 + 0.8):
                continue
            if not self.stroke(-d, t0, t0 + dt + dt2, _world(ball, d)):
                continue
            tb = t0 + dt
            self.flight(t0, tb, _world(p0, d), _world_v(v, d))
            self.contact(tb, "bounce", _world(target, d), -d)
            self.flight(tb, tb + dt2, _world(target, d), _world_v(v2, d))
            self.contact(tb + dt2, "hit", _world(ball, d), -d)
            self.after_shot(d, t0)
            return tb + dt2, _world(ball, d)
        return None

    def after_shot(self, d: int, t0: float) -> None:
        """The shooter recovers towards its ready position after its shot."""
        self.ready(d, t0 + 0.7)

    def deep_lob(self, d: int, t0: float, p, returned: bool) -> tuple[float, tuple] | None:
        """A deep, high-kicking lob by d; the receiver runs back and swings LONG_DELAY frames after the bounce.
        ``returned``: the swing meets the ball (a bounce, then a hit); else it is mishit off the racket's frame,
        out of the court (a winner). Every draw before the receiver's contact is the same either way."""
        lo, hi = LONG_DELAY
        for _ in range(400):
            target = (self.u(-SINGLES / 2 + 0.6, SINGLES / 2 - 0.6), LENGTH - self.u(0.3, 3.0), BALL_R)
            dt = self.u(1.3, 2.0)
            shot = self.aim(d, t0, p, target, dt)
            if shot is None:
                continue
            p0, v = shot
            vz_in = v[2] - G * dt
            e, f = self.u(0.65, 0.85), self.u(0.2, 0.45)
            v2 = (v[0] * f, v[1] * f, -vz_in * e)
            z_hit = self.u(1.3, 2.4)
            dt2 = _descend_time(BALL_R, v2[2], z_hit)
            if dt2 is None or not (lo + 0.5 <= dt2 * self.fps <= hi - 0.5):
                continue
            ball = (target[0] + v2[0] * dt2, target[1] + v2[1] * dt2, z_hit)
            if not (ball[1] < LENGTH + FENCE_BACK - 0.8 and abs(ball[0]) < DOUBLES / 2 + 0.8):
                continue
            tb, th = t0 + dt, t0 + dt + dt2
            if not self.stroke(-d, t0 + 0.3, th, _world(ball, d)):
                continue
            self.flight(t0, tb, _world(p0, d), _world_v(v, d))
            self.contact(tb, "bounce" if returned else "winner", _world(target, d), -d, deep=True)
            self.ready(d, t0 + 0.9)
            self.key(d, th, *self.pos[d])  # both players' positions are fixed up to the contact, whatever follows
            if returned:
                self.flight(tb, th, _world(target, d), _world_v(v2, d))
                self.contact(th, "hit", _world(ball, d), -d)
                return th, _world(ball, d)
            # missed: the ball comes off the racket's frame, up and sideways, out of the court (in the air)
            self.flight(tb, th, _world(target, d), _world_v(v2, d))
            away = (self.u(6.0, 10.0) * (1 if self.rng.random() < 0.5 else -1), self.u(1.0, 4.0), self.u(7.0, 11.0))
            gone = self.u(0.7, 1.0)
            self.flight(th, th + gone, _world(ball, d), _world_v(away, d))
            self.end_time = th + gone
            return th, _world(ball, d)
        return None

    @staticmethod
    def _to_fence(p, v) -> float | None:
        """Time for a ball leaving the ground at p with velocity v (shooter's coordinates) to reach a fence, if it
        gets there before touching the ground again."""
        times = []
        if v[1] > 0:
            times.append((LENGTH + FENCE_BACK - p[1]) / v[1])
        if v[0] != 0:
            times.append((math.copysign(FENCE_SIDE, v[0]) - p[0]) / v[0])
        t = min(times) if times else math.inf
        landing = _descend_time(p[2], v[2], BALL_R)
        return t if landing is not None and t < landing - 0.05 else None

    def out(self, d: int, t0: float, p) -> None:
        """The last shot lands beyond a line (long or wide) and flies on to a fence."""
        for _ in range(400):
            if self.rng.random() < 0.5:
                target = (self.u(-SINGLES / 2, SINGLES / 2), LENGTH + self.u(0.3, 2.0), BALL_R)
            else:
                sign = 1 if self.rng.random() < 0.5 else -1
                target = (sign * (SINGLES / 2 + self.u(0.3, 1.4)), self.u(NET_Y + 3.0, LENGTH - 0.5), BALL_R)
            dt = self.u(0.7, 1.1)
            shot = self.aim(d, t0, p, target, dt)
            if shot is None:
                continue
            p0, v = shot
            vz_in = v[2] - G * dt
            v2 = (v[0] * self.u(0.6, 0.8), v[1] * self.u(0.6, 0.8), -vz_in * self.u(0.65, 0.8))
            t_fence = self._to_fence(target, v2)
            if t_fence is None:
                continue
            tb = t0 + dt
            self.flight(t0, tb, _world(p0, d), _world_v(v, d))
            self.contact(tb, "out", _world(target, d), -d)
            self.flight(tb, tb + t_fence, _world(target, d), _world_v(v2, d))
            self.ready(d, t0 + 0.7)
            self.end_time = tb + t_fence
            return
        raise RuntimeError("court-top: no valid out shot found (generator bug)")

    def into_net(self, d: int, t0: float, p) -> None:
        """The last shot meets the net below its tape; the ball stays caught in the mesh for a moment."""
        p0 = _world(p, d)
        for _ in range(400):
            target = (self.u(-SINGLES / 2, SINGLES / 2), NET_Y - BALL_R, self.u(0.15, 0.75))
            dt = self.u(0.35, 0.6)
            v = _flight(p0, target, dt)
            if p0[2] + max(v[2], 0.0) ** 2 / (2 * G) > 6.0:
                continue
            tn = t0 + dt
            self.flight(t0, tn, _world(p0, d), _world_v(v, d))
            self.contact(tn, "net", _world(target, d), d)
            self.segments.append(Segment(tn, tn + STUCK_S, _world(target, d)))
            self.ready(d, t0 + 0.7)
            self.end_time = tn + STUCK_S
            return
        raise RuntimeError("court-top: no valid net shot found (generator bug)")


def _plan_rally(seed: int, server: int, kinds: list[str], ending: str, fps: float, preset: Preset) -> _Rally:
    """One rally: the serve, one shot per entry of ``kinds`` (``normal``/``volley``/``deep``, each returned),
    then the ``ending`` shot (winner, out or net). A shot whose draw fails is played as a normal one."""
    rally = _Rally(np.random.default_rng(seed), server, fps, preset)
    t, p = rally.serve()
    d = server
    for k, kind in enumerate(["serve"] + kinds):
        if kind == "deep":
            done = rally.deep_lob(d, t, p, returned=True)
        else:
            done = rally.rally_shot(d, t, p, kind)
        if done is None and kind != "normal":
            done = rally.rally_shot(d, t, p, "normal")
        if done is None:
            raise RuntimeError(f"court-top: no valid shot {k} found (generator bug)")
        t, p = done
        d = -d
    if ending == "winner":
        if rally.deep_lob(d, t, p, returned=False) is None:
            raise RuntimeError("court-top: no valid winner found (generator bug)")
    elif ending == "net":
        rally.into_net(d, t, p)
    else:
        rally.out(d, t, p)
    for side in (1, -1):
        rally.ready(side, rally.end_time + rally.u(0.2, 0.5))
    rally.end_time += rally.u(0.3, 0.6)
    return rally


def _rally_kinds(rng: np.random.Generator, returns: int, deep: int, volley_p: float) -> list[str]:
    """The returned shots of a rally after the serve's: ``returns`` of them, one deep lob among them if ``deep``
    (never the return of serve), volleys with probability ``volley_p``."""
    kinds = ["volley" if rng.random() < volley_p else "normal" for _ in range(returns)]
    if deep and returns >= 1:
        kinds[int(rng.integers(0, returns))] = "deep"
    return kinds


# ------------------------------------------------------------------------------------------------------------
# One video


def simulate_video(spec: VideoSpec, preset: str | Preset = "tiny", *, render: bool = True,
                   flip_deep: int | None = None) -> SimulatedVideo:
    """Simulate (and optionally render) one video from its spec.

    ``flip_deep=k`` turns the k-th deep lob of the video (a winner, or a lob that is returned) into the other
    outcome: a winner becomes a returned lob followed by one more shot that lands out; a returned lob becomes a
    winner that ends the rally. Every draw before the receiver's contact is the same, so the two videos are
    identical up to that contact (LONG_DELAY frames after the bounce): this is how the tests check the long-range
    class. The rallies keep the times planned for the unflipped video.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    fps = preset.fps
    rng = np.random.default_rng([spec.seed, 1])
    duration = spec.num_frames / fps
    n = len(spec.endings)
    rally_seeds = [int(s) for s in rng.integers(0, 2**62, size=n)]
    servers = [1 if b else -1 for b in rng.integers(0, 2, size=n)]
    returns = [min(int(rng.geometric(1.0 / (preset.mean_returns + 1.0))) - 1, 14) for _ in range(n)]
    deep = list(spec.deep_returns)
    returns = [max(r, deep[i]) for i, r in enumerate(returns)]
    kind_seeds = [int(s) for s in rng.integers(0, 2**62, size=n)]
    margin = 0.3

    def plan(i: int) -> _Rally:
        kinds = _rally_kinds(np.random.default_rng(kind_seeds[i]), returns[i], deep[i], preset.volley_p)
        return _plan_rally(rally_seeds[i], servers[i], kinds, spec.endings[i], fps, preset)

    rallies = [plan(i) for i in range(n)]
    while sum(r.end_time for r in rallies) > duration - 2 * margin:
        # shorten the longest rally by one exchange (two shots); a returned deep lob goes last
        i = int(np.argmax([r - d for r, d in zip(returns, deep)]))
        if returns[i] > deep[i]:
            returns[i] = max(deep[i], returns[i] - 2)
        elif any(deep):
            i = int(np.argmax(deep))
            deep[i] = 0
        else:
            raise PespotError(f"synthetic video '{spec.name}': {n} rallies do not fit in {spec.num_frames} "
                              f"frames (preset too short)")
        rallies[i] = plan(i)
    slack = duration - 2 * margin - sum(r.end_time for r in rallies)
    gaps = rng.dirichlet(np.ones(n + 1)) * slack
    offsets = list(margin + gaps[0] + np.concatenate([[0.0], np.cumsum([r.end_time + g for r, g in
                                                                         zip(rallies, gaps[1:])])[:-1]]))
    if flip_deep is not None:
        rallies = _flipped(rallies, flip_deep, rally_seeds, servers, returns, deep, kind_seeds, spec, fps, preset)

    video = SimulatedVideo(spec=spec, fps=fps, width=preset.size, height=preset.size,
                           classes=classes_of(preset), segments=[], contacts=[],
                           players=[PlayerTrack(1), PlayerTrack(-1)])
    _place(video, rallies, offsets)
    for c in video.contacts:
        c.frame = event_frame(c.time, c.point, video.ball_position, fps)
        if not 0 <= c.frame < spec.num_frames:
            raise PespotError(f"synthetic video '{spec.name}': an event falls outside the video")
    if render:
        video.frames = _render(video, preset, np.random.default_rng([spec.seed, 3]))
    return video


def _flipped(rallies: list[_Rally], k: int, rally_seeds, servers, returns, deep_returns, kind_seeds,
             spec: VideoSpec, fps: float, preset: Preset) -> list[_Rally]:
    """``rallies`` with the k-th deep lob (in time order) given the other outcome (see ``simulate_video``)."""
    count = 0
    for i, rally in enumerate(rallies):
        deep = sorted((c for c in rally.contacts if c.deep), key=lambda c: c.time)
        if k >= count + len(deep):
            count += len(deep)
            continue
        kinds = _rally_kinds(np.random.default_rng(kind_seeds[i]), returns[i], deep_returns[i], preset.volley_p)
        if deep[k - count].label == "winner":
            kinds, ending = kinds + ["deep"], "out"  # the winner is returned; the rally ends one shot later
        else:
            kinds, ending = kinds[:kinds.index("deep")], "winner"  # the returned lob becomes the winner
        out = list(rallies)
        out[i] = _plan_rally(rally_seeds[i], servers[i], kinds, ending, fps, preset)
        return out
    raise PespotError(f"synthetic video '{spec.name}': has {count} deep lobs, no deep lob {k}")


def _place(video: SimulatedVideo, rallies: list[_Rally], offsets: list[float]) -> None:
    """Put every rally at its offset in the video: segments, contacts and the players' keys and swings."""
    ready = {1: (0.0, -1.0), -1: (0.0, LENGTH + 1.0)}
    for p in video.players:
        p.keys.append((0.0, *ready[p.side]))
    for rally, offset in zip(rallies, offsets):
        for seg in rally.segments:
            video.segments.append(Segment(seg.t0 + offset, seg.t1 + offset, seg.p0, seg.v, seg.gravity))
        for c in rally.contacts:
            video.contacts.append(Contact(c.time + offset, c.label, c.point, c.side, deep=c.deep))
        for p in video.players:
            track = rally.players[p.side]
            p.keys.extend((t + offset, x, y) for t, x, y in sorted(track.keys))
            p.swings.extend((t + offset, kind) for t, kind in track.swings)
    for p in video.players:
        p.keys.sort()


# ------------------------------------------------------------------------------------------------------------
# The camera


@dataclass
class Camera:
    """A pinhole camera high behind the near baseline; ``project`` maps world points to (column, row) pixels."""

    position: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3) world -> camera (rows: right, down, forward)
    focal: float  # pixels
    centre: tuple[float, float]  # principal point (column, row)

    def project(self, x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World point(s) -> (column, row, depth)."""
        p = np.stack(np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)), -1)
        c = (p - self.position) @ self.rotation.T
        depth = c[..., 2]
        return (self.centre[0] + self.focal * c[..., 0] / depth, self.centre[1] + self.focal * c[..., 1] / depth,
                depth)

    def rays(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """World directions (…, 3) of the rays through pixel positions (column, row)."""
        d = np.stack([(cols - self.centre[0]) / self.focal, (rows - self.centre[1]) / self.focal,
                      np.ones_like(cols)], -1)
        return d @ self.rotation


def _make_camera(rng: np.random.Generator, size: int) -> Camera:
    height, back, side = rng.uniform(11.0, 17.0), rng.uniform(7.0, 13.0), rng.uniform(-1.5, 1.5)
    position = np.array([side, -back, height])
    target = np.array([rng.uniform(-0.5, 0.5), NET_Y + rng.uniform(-1.5, 1.0), 0.0])
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    cam = Camera(position, np.stack([right, down, forward]), 1.0, (0.0, 0.0))
    # zoom so that the play area (the court, 5 m behind the baselines, 0.5 m beside the doubles lines, up to
    # 3 m high) fills the frame; the fences may fall outside it
    xs = np.tile(np.array([-1, 1, -1, 1]) * (DOUBLES / 2 + 0.5), 2)
    ys = np.tile([-5.0, -5.0, LENGTH + 5.0, LENGTH + 5.0], 2)
    cols, rows, _ = cam.project(xs, ys, np.repeat([0.0, 3.0], 4))
    extent = max(cols.max() - cols.min(), rows.max() - rows.min())
    cam.focal = float(size * rng.uniform(0.9, 1.0) / extent)
    cols, rows = cols * cam.focal, rows * cam.focal
    cam.centre = (size / 2 - (cols.max() + cols.min()) / 2, size / 2 - (rows.max() + rows.min()) / 2)
    return cam


# ------------------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class _Look:
    """Per-video appearance and lighting."""

    court: tuple
    surround: tuple
    line: tuple
    ball: tuple
    shirts: tuple
    skin: tuple
    gain: np.ndarray  # (3,) colour cast times light level
    gradient: np.ndarray  # (H, W) multiplicative light gradient
    noise: float
    ball_px: tuple[float, float]


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _make_look(rng: np.random.Generator, preset: Preset) -> _Look:
    surfaces = [((0.18, 0.36, 0.62), (0.20, 0.45, 0.30)), ((0.70, 0.38, 0.22), (0.62, 0.34, 0.20)),
                ((0.25, 0.52, 0.25), (0.20, 0.42, 0.20)), ((0.30, 0.30, 0.55), (0.45, 0.25, 0.35)),
                ((0.45, 0.50, 0.48), (0.30, 0.33, 0.32))]
    court_c, surround_c = surfaces[int(rng.integers(len(surfaces)))]
    court, surround = jitter(rng, court_c, 0.06), jitter(rng, surround_c, 0.06)
    balls = [(0.85, 0.95, 0.25), (0.97, 0.97, 0.92), (1.0, 0.65, 0.15)]
    for _ in range(20):  # a ball that differs from the court at least a little (as broadcasters choose it)
        ball = jitter(rng, balls[int(rng.integers(len(balls)))], 0.05)
        if abs(_luma(ball) - _luma(court)) > 0.2:
            break
    palette = [(0.9, 0.15, 0.15), (0.15, 0.3, 0.9), (0.95, 0.95, 0.95), (0.1, 0.1, 0.12), (0.95, 0.6, 0.1),
               (0.55, 0.2, 0.75)]
    shirts = tuple(jitter(rng, palette[int(h)], 0.05) for h in rng.permutation(len(palette))[:2])
    skin = jitter(rng, (0.8, 0.6, 0.45), 0.1)
    size = preset.size
    level = rng.uniform(0.75, 1.15)
    gain = np.clip(level * (1 + rng.uniform(-0.08, 0.08, 3)), 0.5, 1.4).astype(np.float32)
    angle, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.25)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    gradient = (1 + strength * (math.cos(angle) * cols + math.sin(angle) * rows)).astype(np.float32)
    noise = float(rng.uniform(*preset.noise)) / 255.0 if preset.distractors else 0.0
    scale = size / 64
    return _Look(court, surround, jitter(rng, (0.95, 0.95, 0.93), 0.03), ball, shirts, skin, gain, gradient, noise,
                 (preset.ball_px[0] * scale, preset.ball_px[1] * scale))


def _background(cam: Camera, look: _Look, rng: np.random.Generator, size: int, margin: int,
                supersample: int = 4) -> np.ndarray:
    """The static scene on a margin of ``margin`` pixels for the pan, ray-cast at ``supersample``^2 rays per
    pixel: the court with its lines, the surround, the net, the back wall with boards, the stands."""
    full = size + 2 * margin
    s = supersample
    grid = (np.arange(full * s, dtype=np.float64) + 0.5) / s - margin
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    rays = cam.rays(cols, rows)
    img = np.empty(rows.shape + (3,), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t_ground = -cam.position[2] / rays[..., 2]
        gx = cam.position[0] + t_ground * rays[..., 0]
        gy = cam.position[1] + t_ground * rays[..., 1]
        t_wall = (WALL_Y - cam.position[1]) / rays[..., 1]
        wz = cam.position[2] + t_wall * rays[..., 2]
        wx = cam.position[0] + t_wall * rays[..., 0]
        t_net = (NET_Y - cam.position[1]) / rays[..., 1]
        nz = cam.position[2] + t_net * rays[..., 2]
        nx = cam.position[0] + t_net * rays[..., 0]
    on_ground = (t_ground > 0) & (gy < WALL_Y)
    # stands above the wall: a blotchy crowd
    crowd = rng.uniform(-0.12, 0.12, size=(24, 48, 3)).astype(np.float32)
    stands = np.asarray(jitter(rng, (0.25, 0.24, 0.27), 0.08), dtype=np.float32)
    with np.errstate(invalid="ignore"):
        ci = np.clip(np.nan_to_num((wz - WALL_H) * 3, posinf=0, neginf=0), 0, 23).astype(int)
        cj = np.clip(np.nan_to_num(wx + 24, posinf=0, neginf=0), 0, 47).astype(int)
    img[:] = stands + crowd[ci, cj]
    # the back wall with sponsor boards
    wall = np.asarray(jitter(rng, (0.12, 0.2, 0.35), 0.1), dtype=np.float32)
    boards = np.asarray([jitter(rng, (0.8, 0.8, 0.8), 0.2) for _ in range(8)], dtype=np.float32)
    on_wall = ~on_ground & (wz >= 0) & (wz < WALL_H)
    board = np.clip(np.nan_to_num((wx + 16) / 4), 0, 7).astype(int)
    is_board = on_wall & (wz > 0.5) & (wz < 1.4) & (np.mod(wx + 16, 4) < 3)
    img[on_wall] = wall
    img[is_board] = 0.55 * wall + 0.45 * boards[board[is_board]]
    # the ground: surround, court, lines
    inside = on_ground & (np.abs(gx) <= DOUBLES / 2 + 0.05) & (gy >= -0.05) & (gy <= LENGTH + 0.05)
    img[on_ground] = look.surround
    img[inside] = look.court
    half = LINE_W / 2
    lines = np.zeros(rows.shape, dtype=bool)
    in_len = (gy >= -half) & (gy <= LENGTH + half)
    for x in (-DOUBLES / 2, -SINGLES / 2, SINGLES / 2, DOUBLES / 2):
        lines |= (np.abs(gx - x) <= half) & in_len
    for y in (0.0, LENGTH):
        lines |= (np.abs(gy - y) <= half) & (np.abs(gx) <= DOUBLES / 2 + half)
    for y in (NET_Y - SERVICE, NET_Y + SERVICE):
        lines |= (np.abs(gy - y) <= half) & (np.abs(gx) <= SINGLES / 2)
    lines |= (np.abs(gx) <= half) & (np.abs(gy - NET_Y) <= SERVICE)
    for y in (0.0, LENGTH):  # centre marks
        lines |= (np.abs(gx) <= half) & (np.abs(gy - y) <= 0.2)
    img[lines & on_ground] = look.line
    # the net in front of everything farther than it: a dark mesh, a white tape, two posts
    net_h = NET_CENTRE + (NET_POST - NET_CENTRE) * np.minimum(1.0, np.abs(nx) / POST_X)
    front = (t_net > 0) & (t_net < np.where(on_ground, t_ground, np.inf)) & (np.abs(nx) <= POST_X)
    mesh = front & (nz >= 0) & (nz <= net_h - 0.07)
    tape = front & (nz > net_h - 0.07) & (nz <= net_h)
    img[mesh] = 0.55 * img[mesh] + 0.45 * np.float32(0.05)
    img[tape] = look.line
    posts = (t_net > 0) & (np.abs(np.abs(nx) - POST_X) < 0.08) & (nz >= 0) & (nz <= NET_POST)
    img[posts] = 0.2
    img = img.reshape(full, s, full, s, 3).mean(axis=(1, 3))
    return np.clip(img, 0, 1)


def _smooth_keys(keys: list[tuple[float, float, float]], t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate (x, y) keyframes at times ``t`` with smoothstep easing."""
    times = np.array([k[0] for k in keys])
    xs, ys = np.array([k[1] for k in keys]), np.array([k[2] for k in keys])
    idx = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(keys) - 1)
    nxt = np.minimum(idx + 1, len(keys) - 1)
    span = times[nxt] - times[idx]
    s = np.where(span > 0, np.clip((t - times[idx]) / np.where(span > 0, span, 1), 0, 1), 0.0)
    s = s * s * (3 - 2 * s)
    return xs[idx] + s * (xs[nxt] - xs[idx]), ys[idx] + s * (ys[nxt] - ys[idx])


def _racket(swings: list[tuple[float, str]], t: float) -> tuple[float, str]:
    """Swing phase of the racket at ``t``: -1 (back) -> 0 (contact) -> 1 (follow-through), and the swing kind."""
    for tc, kind in swings:
        u = (t - tc) / 0.25
        if -1.0 <= u <= 1.5:
            return max(-1.0, min(1.0, u)), kind
    return -1.0, "idle"


def _distractors(rng: np.random.Generator, num_frames: int, fps: float, enabled: bool) -> dict[str, np.ndarray]:
    """Paths (N, 3) of moving things that are not events (NaN rows: absent): two ball kids running along the
    back fences, a spectator's ball bouncing beside the court, a bird (with its shadow); cloud shadows."""
    t = np.arange(num_frames) / fps
    nan = np.full((num_frames, 3), np.nan)
    out = {"kid_near": nan.copy(), "kid_far": nan.copy(), "spare_ball": nan.copy(), "bird": nan.copy()}
    out["clouds"] = np.zeros((0, 5))
    if not enabled:
        return out
    for name, y in (("kid_near", -FENCE_BACK + 0.6), ("kid_far", LENGTH + FENCE_BACK - 0.6)):
        x = np.full(num_frames, rng.uniform(-DOUBLES / 2, DOUBLES / 2))
        for _ in range(int(rng.integers(1, 4))):  # a few runs along the fence
            start, speed = rng.uniform(0, t[-1]), rng.uniform(2.0, 4.5) * (1 if rng.random() < 0.5 else -1)
            dur = rng.uniform(0.8, 2.0)
            run = (t >= start) & (t < start + dur)
            x[run] += speed * (t[run] - start)
            x[t >= start + dur] += speed * dur
        x = np.clip(x, -FENCE_SIDE + 0.5, FENCE_SIDE - 0.5)
        out[name] = np.stack([x, np.full(num_frames, y), np.zeros(num_frames)], 1)
    side = 1 if rng.random() < 0.5 else -1
    bx, by = side * (DOUBLES / 2 + rng.uniform(1.8, 2.6)), rng.uniform(2.0, LENGTH - 2.0)
    start = rng.uniform(0, max(0.1, t[-1] - 3.0))
    z = np.full(num_frames, np.nan)
    hop_t = start
    while hop_t < t[-1]:  # a player waiting beside the court bounces a spare ball: bounces that are not events
        dur = rng.uniform(0.5, 0.9)
        mask = (t >= hop_t) & (t < hop_t + dur)
        dt = t[mask] - hop_t
        z[mask] = BALL_R + 0.5 * G * dur * dt - 0.5 * G * dt * dt
        hop_t += dur + rng.uniform(0.0, 1.2)
    out["spare_ball"] = np.stack([np.full(num_frames, bx), np.full(num_frames, by), z], 1)
    if rng.random() < 0.7:
        start, speed = rng.uniform(0, max(0.1, t[-1] - 1.0)), rng.uniform(6.0, 12.0)
        heading = rng.uniform(0, 2 * math.pi)
        x0, y0 = rng.uniform(-8, 8), rng.uniform(0, LENGTH)
        dt = t - start
        bird = np.stack([x0 + speed * math.cos(heading) * dt, y0 + speed * math.sin(heading) * dt,
                         np.full(num_frames, rng.uniform(5.0, 9.0))], 1)
        bird[(dt < 0) | (dt > 4.0)] = np.nan
        out["bird"] = bird
    # cloud shadows: (x0, y0, vx, vy, radius) on the ground, drifting slowly
    k = int(rng.integers(0, 3))
    out["clouds"] = np.stack([rng.uniform(-15, 15, k), rng.uniform(-5, LENGTH + 5, k), rng.uniform(-1.5, 1.5, k),
                              rng.uniform(-1.5, 1.5, k), rng.uniform(4.0, 9.0, k)], 1) if k else out["clouds"]
    return out


def _render(video: SimulatedVideo, preset: Preset, rng: np.random.Generator) -> np.ndarray:
    """All frames of a simulated video: uint8 (N, H, W, 3)."""
    size, num_frames, fps = preset.size, video.num_frames, video.fps
    cam = _make_camera(rng, size)
    look = _make_look(rng, preset)
    scale = size / 64
    margin = math.ceil(preset.pan_px * scale)
    background = _background(cam, look, rng, size, margin)
    times = np.arange(num_frames) / fps
    pan = np.zeros((num_frames, 2), dtype=np.int64)
    amp = int(rng.integers(0, margin + 1)) if preset.distractors else 0
    for axis in range(2):
        f, phase = rng.uniform(0.05, 0.2), rng.uniform(0, 2 * math.pi)
        pan[:, axis] = np.round(amp * np.sin(2 * math.pi * f * times + phase)).astype(np.int64)
    video.camera, video.pan = cam, pan
    things = _distractors(rng, num_frames, fps, preset.distractors)
    exposure = 0.5 / fps  # the shutter is open half a frame: a fast ball is a short streak
    sub = np.linspace(-0.5, 0.5, 3) * exposure
    ball = np.stack(video.ball_position((times[:, None] + sub[None, :]).ravel()), -1).reshape(num_frames, 3, 3)
    bodies = [(p, *_smooth_keys(p.keys, times)) for p in video.players]
    # the projected scale at the near and far baselines, for the ball's drawn size
    near_px = cam.focal / cam.project(0.0, 0.0, 0.0)[2]
    far_px = cam.focal / cam.project(0.0, LENGTH, 0.0)[2]
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    ground_xy = None
    if len(things["clouds"]):
        rays = cam.rays(cols + 0.5, rows + 0.5)
        tg = -cam.position[2] / np.where(rays[..., 2] < 0, rays[..., 2], -1e-6)
        ground_xy = (cam.position[0] + tg * rays[..., 0], cam.position[1] + tg * rays[..., 1])
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for n in range(num_frames):
        dx, dy = int(pan[n, 0]), int(pan[n, 1])
        img = background[margin - dy: margin - dy + size, margin - dx: margin - dx + size].copy()
        canvas = _Painter(img, cam, float(dx), float(dy), scale)
        light = look.gradient
        if ground_xy is not None:
            shade = np.ones((size, size), dtype=np.float32)
            for x0, y0, vx, vy, radius in things["clouds"]:
                cx, cy = x0 + vx * times[n], y0 + vy * times[n]
                d2 = ((ground_xy[0] - cx) ** 2 + (ground_xy[1] - cy) ** 2) / (radius * radius)
                shade *= (1 - 0.3 * np.exp(-d2)).astype(np.float32)
            light = light * shade
        _draw_frame(canvas, video, look, things, bodies, ball[n], times[n], n, near_px, far_px)
        img *= light[..., None] * look.gain
        if look.noise > 0:
            img += rng.normal(0.0, look.noise, size=img.shape).astype(np.float32)
        frames[n] = to_uint8(img)
    return frames


class _Painter(Canvas):
    """World points -> pixels through the camera (plus the pan), on the shared drawing primitives."""

    def __init__(self, img: np.ndarray, cam: Camera, dx: float, dy: float, scale: float):
        super().__init__(img)
        self.cam, self.dx, self.dy, self.scale = cam, dx, dy, scale

    def at(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        c, r, depth = self.cam.project(x, y, z)
        return float(c) + self.dx, float(r) + self.dy, float(depth)

    def blob(self, x: float, y: float, z: float, radius_m: float, colour, opacity: float = 1.0,
             squash: float = 1.0, min_px: float = 0.5) -> None:
        c, r, depth = self.at(x, y, z)
        if depth > 0:
            self.disc_px(c, r, max(min_px * self.scale, radius_m * self.cam.focal / depth), colour, opacity, squash)

    def line3(self, a, b, half_px: float, colour, opacity: float = 1.0) -> None:
        ca, ra, da = self.at(*a)
        cb, rb, db = self.at(*b)
        if da > 0 and db > 0:
            self.segment_px(ca, ra, cb, rb, half_px * self.scale, colour, opacity)


def _draw_frame(canvas: _Painter, video: SimulatedVideo, look: _Look, things: dict, bodies: list, ball: np.ndarray,
                t: float, n: int, near_px: float, far_px: float) -> None:
    """Shadows, distractors, players (far to near) and the ball of frame ``n`` onto the background."""
    shadow = (0.0, 0.0, 0.0)
    for name in ("kid_far", "kid_near"):
        x, y, _ = things[name][n]
        if not np.isnan(x):
            canvas.blob(x, y, 0.0, 0.35, shadow, 0.35, squash=0.5)
            canvas.line3((x, y, 0.0), (x, y, 1.1), 0.45, (0.15, 0.3, 0.2))
            canvas.blob(x, y, 1.25, 0.12, look.skin)
    x, y, z = things["spare_ball"][n]
    if not np.isnan(z):
        canvas.blob(x, y, 0.0, 0.12, shadow, 0.3, squash=0.5)
        canvas.blob(x, y, z, 0.1, look.ball, min_px=0.6)
    x, y, z = things["bird"][n]
    if not np.isnan(x):
        canvas.blob(x + 3.0, y + 2.0, 0.0, 0.3, shadow, 0.25, squash=0.5)
        flap = 0.25 if (n // 3) % 2 else -0.15
        canvas.line3((x - 0.4, y, z + flap), (x, y, z), 0.45, (0.1, 0.1, 0.1))
        canvas.line3((x, y, z), (x + 0.4, y, z + flap), 0.45, (0.1, 0.1, 0.1))
    # the players, the far one first
    for p, xs, ys in sorted(bodies, key=lambda b: -b[2][n]):
        _draw_player(canvas, p, float(xs[n]), float(ys[n]), t, look, video.players.index(p))
    if not np.isnan(ball[:, 0]).all():
        _draw_ball(canvas, ball, look, near_px, far_px)


def _draw_player(canvas: _Painter, p: PlayerTrack, x: float, y: float, t: float, look: _Look, i: int) -> None:
    shirt = look.shirts[i % len(look.shirts)]
    canvas.blob(x + 0.3, y + 0.3, 0.0, 0.45, (0.0, 0.0, 0.0), 0.35, squash=0.5)
    canvas.line3((x, y, 0.0), (x, y, 0.85), 0.5, (0.9, 0.9, 0.9))  # legs
    canvas.line3((x, y, 0.85), (x, y, 1.45), 0.7, shirt)  # body
    canvas.blob(x, y, 1.68, 0.13, look.skin)
    phase, kind = _racket(p.swings, t)
    facing = p.side  # +1 near player looks towards +y
    if kind == "serve":
        tip = (x + 0.2, y + 0.2 * facing, 1.6 + 1.2 * (1 - abs(phase)))
        hand = (x + 0.25, y, 1.7)
    else:
        angle = phase * 1.6  # radians, around the vertical: back (-) -> front (+)
        hand = (x + 0.35, y, 1.0)
        tip = (hand[0] + 0.7 * math.cos(angle), hand[1] + 0.7 * math.sin(angle) * facing, 1.0)
    canvas.line3(hand, tip, 0.35, (0.08, 0.08, 0.08))


def _draw_ball(canvas: _Painter, samples: np.ndarray, look: _Look, near_px: float, far_px: float) -> None:
    """The ball of one frame from its positions during the exposure (3, 3): a disc of 1-3 px (far-near) with
    motion blur, and its shadow on the ground."""
    valid = samples[~np.isnan(samples[:, 0])]
    far_d, near_d = look.ball_px
    for x, y, z in valid:
        c, r, depth = canvas.at(x, y, z)
        if depth <= 0:
            continue
        px_per_m = canvas.cam.focal / depth
        w = float(np.clip((px_per_m - far_px) / max(near_px - far_px, 1e-6), 0.0, 1.2))
        radius = 0.5 * (far_d + w * (near_d - far_d))
        sc, sr, _ = canvas.at(x, y, 0.0)
        shade = float(np.clip(0.45 - 0.08 * z, 0.12, 0.45))
        canvas.disc_px(sc, sr, radius * 0.9, (0.0, 0.0, 0.0), shade / len(valid) * 2, squash=0.6)
        canvas.disc_px(c, r, radius, look.ball, min(1.0, 1.6 / len(valid)))


__all__ = ["CLASSES", "LONG_DELAY", "LONG_RANGE", "NAME", "PRESETS", "Camera", "Contact", "PlayerTrack", "Preset",
           "Segment", "SimulatedVideo", "VideoSpec", "classes_of", "get_preset", "plan_dataset", "plan_split",
           "simulate_video"]
