"""Device mesh, logical axis rules and sharding helpers: the one place that maps names to devices.

The model names every parameter and activation axis with logical names
(``batch, length, embed, heads, kv, mlp, vocab``, plus ``layers`` for scanned
stacks); a rules preset maps them onto the mesh axes ``(data, fsdp, tensor)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from proxyjax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")

# One table per preset: logical axis -> mesh axes (None = replicated).
RULES: dict[str, dict[str, Any]] = {
    # Pure data parallelism: parameters replicated.
    "dp": {"batch": BATCH, "length": None, "embed": None, "heads": None, "kv": None,
           "mlp": None, "vocab": None, "layers": None},
    # ZeRO-3 style: parameters and optimizer state sharded over fsdp on the embed axis.
    "fsdp": {"batch": BATCH, "length": None, "embed": "fsdp", "heads": None, "kv": None,
             "mlp": None, "vocab": None, "layers": None},
    # FSDP + tensor parallelism (Megatron-style split of heads and MLP).
    "fsdp_tp": {"batch": BATCH, "length": None, "embed": "fsdp", "heads": "tensor",
                "kv": None, "mlp": "tensor", "vocab": "tensor", "layers": None},
}
# Activations keep the embed axis unsharded (FSDP gathers weights, not activations).
ACTIVATION_OVERRIDES = {"embed": None}


def mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Resolves one ``-1`` entry; checks the product equals the device count."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise ConfigError("mesh.shape", f"needs {len(MESH_AXES)} entries {MESH_AXES}, got {shape}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ConfigError("mesh.shape", f"entries must be positive with at most one -1, got {shape}")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ConfigError("mesh.shape", f"{shape} does not divide {num_devices} devices")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ConfigError("mesh.shape", f"{shape} needs {math.prod(shape)} devices, have {num_devices}")
  return shape


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None,
              dcn_shape: Sequence[int] | None = None) -> Mesh:
  """The ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all devices).

  With a ``dcn_shape`` entry > 1 the mesh is hybrid: ``shape`` is the global
  shape, ``dcn_shape`` the part of it that spans granules over the slow
  network (TPU slices, else processes, i.e. one process per host), and each
  granule holds an ICI block of ``shape / dcn_shape`` devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(shape, len(devices))
  dcn = hybrid_dcn_shape(dcn_shape, shape)
  if dcn is not None:
    return Mesh(hybrid_device_grid(shape, dcn, devices), MESH_AXES)
  try:
    grid = mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # pylint: disable=broad-except
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def hybrid_dcn_shape(dcn_shape: Sequence[int] | None,
                     shape: Sequence[int]) -> tuple[int, ...] | None:
  """Checks ``mesh.dcn_shape`` against the resolved shape; None when all ones."""
  if dcn_shape is None:
    return None
  dcn = tuple(int(s) for s in dcn_shape)
  if len(dcn) != len(MESH_AXES) or any(s < 1 for s in dcn):
    raise ConfigError("mesh.dcn_shape", f"needs {len(MESH_AXES)} positive entries "
                      f"{MESH_AXES}, got {tuple(dcn_shape)}")
  if any(s % d for s, d in zip(shape, dcn)):
    raise ConfigError("mesh.dcn_shape", f"{dcn} does not divide the mesh shape {tuple(shape)} "
                      "axis by axis")
  return dcn if math.prod(dcn) > 1 else None


def hybrid_device_grid(shape: Sequence[int], dcn: Sequence[int],
                       devices: Sequence[Any]) -> np.ndarray:
  """Device array of ``shape``: granules (slices, else processes) tiled by ``dcn``."""
  ici = tuple(s // d for s, d in zip(shape, dcn))
  n = math.prod(dcn)
  slices = {getattr(d, "slice_index", None) for d in devices}
  processes = {d.process_index for d in devices}
  if None not in slices and len(slices) == n:
    by_process = False
  elif len(processes) == n:
    by_process = True
  else:
    raise ConfigError(
        "mesh.dcn_shape", f"{tuple(dcn)} spans {n} granules, but the devices form "
        f"{len(slices) if None not in slices else 'no'} TPU slices and {len(processes)} "
        "processes; run one process per host (or per slice) to use a hybrid mesh")
  return mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=by_process,
                                              allow_split_physical_axes=True)


def rules_for(preset: str) -> dict[str, Any]:
  if preset not in RULES:
    raise ConfigError("mesh.rules", f"unknown preset {preset!r}; known: {', '.join(RULES)}")
  return RULES[preset]


def logical_to_spec(names: Sequence[str | None], rules: dict[str, Any],
                    shape: Sequence[int] | None = None, mesh: Mesh | None = None) -> P:
  """Maps logical axis names to a PartitionSpec; a mesh axis is used at most once,
  and an axis whose size is not divisible by the mesh axes stays replicated."""
  used: set[str] = set()
  out = []
  for i, name in enumerate(names):
    target = rules.get(name) if name is not None else None
    if target is None:
      out.append(None)
      continue
    axes = (target,) if isinstance(target, str) else tuple(target)
    axes = tuple(a for a in axes if a not in used)
    if mesh is not None:
      axes = tuple(a for a in axes if mesh.shape[a] > 1)
      if shape is not None and axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
        axes = ()
    used.update(axes)
    out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return P(*out)


# --- activation constraints --------------------------------------------------------

_CONTEXT: contextvars.ContextVar[tuple[Mesh, dict[str, Any]] | None] = contextvars.ContextVar(
    "proxyjax_sharding", default=None)


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: dict[str, Any]):
  """Activates ``constrain`` inside a traced function (set it around jit tracing)."""
  token = _CONTEXT.set((mesh, {**rules, **ACTIVATION_OVERRIDES}))
  try:
    yield
  finally:
    _CONTEXT.reset(token)


def static_sharding(mesh: Mesh | None, rules: dict[str, Any] | None):
  """A hashable ``(mesh, rules items)`` for a jitted function's static argument
  (None without a mesh); trace the body under ``traced_sharding`` of it."""
  return None if mesh is None else (mesh, tuple(sorted((rules or {}).items())))


@contextlib.contextmanager
def traced_sharding(sharding):
  """``sharding_context`` of a ``static_sharding`` value; nothing for None."""
  if sharding is None:
    yield
    return
  mesh, rules = sharding
  with sharding_context(mesh, dict(rules)):
    yield


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """``with_sharding_constraint`` by logical names; a no-op outside a sharding context."""
  ctx = _CONTEXT.get()
  if ctx is None:
    return x
  mesh, rules = ctx
  spec = logical_to_spec(names, rules, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH, *([None] * (ndim - 1))))


def data_shard(mesh: Mesh | np.ndarray, batch_size: int,
               process_index: int | None = None) -> tuple[int, int]:
  """(index, count) of the data shard a process must load for one global batch.

  The batch axis is sharded over ``(data, fsdp)`` (``batch_sharding``): the
  device at mesh coordinates ``(d, f, t)`` holds row block ``d * F + f``. A
  process loads the rows of its devices; when the ``tensor`` axis (or a
  replicated batch) spans processes, several processes hold the same rows and
  must load identical data: they share a shard index. Each process loads
  ``batch_size // count`` rows (its blocks in order, which is how
  ``global_batch`` places them). ``mesh``: a Mesh, or its device grid (anything
  with ``process_index``). Raises ConfigError where processes hold partly
  overlapping sets of blocks (no per-process pipeline can feed them).
  """
  grid = np.asarray(mesh.devices if isinstance(mesh, Mesh) else mesh)
  data, fsdp, _ = grid.shape
  if process_index is None:
    process_index = jax.process_index()
  if batch_size % (data * fsdp):
    raise ConfigError("batch_size", f"{batch_size} rows do not split over the {data * fsdp} "
                      f"batch shards (data x fsdp) of mesh {grid.shape}")
  blocks_of: dict[int, set[int]] = {}
  for (d, f, _), device in np.ndenumerate(grid):
    blocks_of.setdefault(device.process_index, set()).add(d * fsdp + f)
  distinct = sorted({frozenset(b) for b in blocks_of.values()}, key=min)
  if sum(len(b) for b in distinct) != data * fsdp or len({len(b) for b in distinct}) != 1:
    raise ConfigError("mesh.shape", "processes hold partly overlapping or unequal sets of "
                      f"batch blocks {[sorted(b) for b in distinct]}: lay the data/fsdp axes "
                      "out across processes (mesh.dcn_shape, one process per host)")
  return distinct.index(frozenset(blocks_of[process_index])), len(distinct)


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh,
                 batch_size: int | None = None) -> dict[str, jax.Array]:
  """Per-process batches -> global arrays sharded over (data, fsdp) on the batch axis.

  ``batch_size``: global rows (needed when processes replicate rows, see
  ``data_shard``; default: local rows x number of data shards by jax's inference).
  """
  return {k: jax.make_array_from_process_local_data(
      batch_sharding(mesh, v.ndim), v,
      None if batch_size is None else (batch_size,) + v.shape[1:])
          for k, v in batch.items()}
