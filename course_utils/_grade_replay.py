"""Record a learner's function in one process, replay it to the real check in another.

The grader (`course_utils.grade`) never runs a learner's code in its own process. A
worker process runs the notebook and calls each exercise's check with a `Recorder`
around the learner's function: every call is written down as data (a fingerprint of the
inputs, the result or the exception, the inputs it changed in place, the calls it made
to the callables it was given). The grader then calls the same check itself with a
`Replayer`, which answers each call from that record. The check's verdict is computed
where no learner code ran, so patching `course_utils.checks`, `CheckResult` or `print`
in the notebook gains nothing; a record that was tampered with can only claim results
the check then verifies.

Everything crosses as JSON that decodes to tensors, arrays, numbers, strings, lists and
dicts: never a pickle, never code."""

from __future__ import annotations

import base64
import builtins
import hashlib
import types
from typing import Any, Callable

import numpy as np
import torch

# Dtypes a recorded tensor may have; others cross as float64.
_DTYPES = {
    str(d): d
    for d in (
        torch.float16,
        torch.float32,
        torch.float64,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint8,
        torch.bool,
    )
}


class ReplayError(Exception):
    """The record has no result for a call the check made (it was not made in the
    notebook)."""


def fingerprint(value: Any) -> str:
    """A sha256 of `value`'s content, the same in every process for the same inputs.

    Tensors and arrays by dtype, shape and bytes; PIL images by mode, size and bytes;
    functions by qualified name; other objects by type and their tensor attributes (a
    scheduler by its tables, not by its step counters).
    """
    digest = hashlib.sha256()
    _feed(digest, value, depth=0)
    return digest.hexdigest()


def _feed(digest, value: Any, depth: int) -> None:
    if depth > 6:
        digest.update(b"<deep>")
        return
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        if tensor.device.type != "meta":
            digest.update(tensor.cpu().contiguous().numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"A{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif value is None or isinstance(value, (bool, int, float, str, np.number)):
        digest.update(f"S{type(value).__name__}:{value!r}".encode())
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}[".encode())
        for item in value:
            _feed(digest, item, depth + 1)
        digest.update(b"]")
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}{{".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key], depth + 1)
        digest.update(b"}")
    elif type(value).__module__.startswith("PIL.") and hasattr(value, "tobytes"):
        digest.update(f"I{value.mode}{value.size}".encode())
        digest.update(value.tobytes())
    elif isinstance(value, (types.FunctionType, types.MethodType)):
        digest.update(f"F{value.__qualname__}".encode())
    else:
        digest.update(f"O{type(value).__qualname__}".encode())
        for name, attribute in sorted(
            vars(value).items() if hasattr(value, "__dict__") else []
        ):
            if isinstance(attribute, torch.Tensor):
                digest.update(name.encode())
                _feed(digest, attribute, depth + 1)


def encode(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-ready data; what cannot cross becomes {"object": type name}."""
    if depth > 8:
        return {"object": "deep"}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}  # nan and inf survive
    if isinstance(value, np.number):
        return {"npnumber": str(value.dtype), "value": encode(value.item())}
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        device = tensor.device.type
        if device == "meta":
            return {
                "tensor": str(tensor.dtype),
                "shape": list(tensor.shape),
                "device": "meta",
            }
        tensor = tensor.cpu()
        if str(tensor.dtype) not in _DTYPES:
            tensor = tensor.double()
        data = base64.b64encode(tensor.contiguous().numpy().tobytes()).decode()
        return {
            "tensor": str(tensor.dtype),
            "shape": list(tensor.shape),
            "device": device,
            "data": data,
        }
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return {
            "array": value.dtype.str,
            "shape": list(value.shape),
            "data": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode(),
        }
    if isinstance(value, (list, tuple)):
        return {
            "list" if isinstance(value, list) else "tuple": [
                encode(v, depth + 1) for v in value
            ]
        }
    if isinstance(value, dict):
        return {
            "dict": [
                [encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()
            ]
        }
    return {"object": type(value).__name__}


def _identifier(name: object, default: str) -> str:
    return (
        name
        if isinstance(name, str) and name.isidentifier() and len(name) < 80
        else default
    )


def decode(data: Any) -> Any:
    """The value `encode` wrote; a malformed record raises ValueError."""
    if data is None or isinstance(data, (bool, int, str)):
        return data
    if isinstance(data, list):
        raise ValueError("a bare list in a record")
    if not isinstance(data, dict):
        raise ValueError(f"unexpected {type(data).__name__} in a record")
    if "float" in data:
        return float(data["float"])
    if "npnumber" in data:
        return np.dtype(str(data["npnumber"])).type(decode(data["value"]))
    if "tensor" in data:
        dtype = _DTYPES.get(data["tensor"])
        shape = [int(n) for n in data["shape"]]
        if dtype is None:
            raise ValueError(f"tensor dtype {data['tensor']!r}")
        if data.get("device") == "meta":
            return torch.empty(shape, dtype=dtype, device="meta")
        array = np.frombuffer(
            base64.b64decode(data["data"]),
            dtype=torch.empty(0, dtype=dtype).numpy().dtype,
        ).reshape(shape)
        tensor = torch.from_numpy(array.copy())
        device = data.get("device", "cpu")
        if device == "cuda" and torch.cuda.is_available():
            tensor = tensor.to(device)
        return tensor
    if "array" in data:
        dtype = np.dtype(str(data["array"]))
        if dtype.kind not in "biuf":
            raise ValueError(f"array dtype {dtype}")
        shape = [int(n) for n in data["shape"]]
        return (
            np.frombuffer(base64.b64decode(data["data"]), dtype=dtype)
            .reshape(shape)
            .copy()
        )
    if "list" in data:
        return [decode(v) for v in data["list"]]
    if "tuple" in data:
        return tuple(decode(v) for v in data["tuple"])
    if "dict" in data:
        out = {}
        for key, value in data["dict"]:
            key = decode(key)
            if not isinstance(key, (str, int, float, bool, type(None), tuple)):
                raise ValueError("an unhashable dict key in a record")
            out[key] = decode(value)
        return out
    if (
        "object" in data
    ):  # something that could not cross: an empty stand-in of that name
        return type(_identifier(data["object"], "Unknown"), (), {})()
    raise ValueError(f"unknown record entry {sorted(data)}")


def _tensors_in(args: tuple) -> list[tuple[list, torch.Tensor]]:
    """(path, tensor) for every tensor an argument holds: itself, in a list, or an
    attribute."""
    found = []
    for i, arg in enumerate(args):
        if isinstance(arg, torch.Tensor):
            found.append(([i], arg))
        elif isinstance(arg, (list, tuple)):
            found += [
                ([i, j], item)
                for j, item in enumerate(arg)
                if isinstance(item, torch.Tensor)
            ]
        elif hasattr(arg, "__dict__") and not callable(arg):
            found += [
                ([i, name], attribute)
                for name, attribute in sorted(vars(arg).items())
                if isinstance(attribute, torch.Tensor)
            ]
    return found


def _callback_targets(args: tuple) -> list[tuple[int, str | None]]:
    """The callables the learner's function is given: plain-function arguments, and
    functions set on an argument object's instance (a check's spy on a scheduler
    method)."""
    targets = []
    for i, arg in enumerate(args):
        if isinstance(arg, types.FunctionType):
            targets.append((i, None))
        elif hasattr(arg, "__dict__") and not callable(arg):
            targets += [
                (i, name)
                for name, attribute in sorted(vars(arg).items())
                if isinstance(attribute, types.FunctionType)
            ]
    return targets


class Recorder:
    """Wraps a learner's function in the worker: each call runs it and is written down.
    """

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.calls: list[dict] = []

    def __call__(self, *args: Any) -> Any:
        key = fingerprint(args)
        before = [
            (path, tensor.detach().clone())
            for path, tensor in _tensors_in(args)
            if tensor.device.type != "meta"
        ]
        callbacks: list[dict] = []
        originals = {}
        wrapped = list(args)
        for i, name in _callback_targets(args):
            target = args[i] if name is None else getattr(args[i], name)

            def logging(*a, _target=target, _i=i, _name=name, **kw):
                callbacks.append(
                    {"target": [_i, _name], "args": encode(a), "kwargs": encode(kw)}
                )
                return _target(*a, **kw)

            if name is None:
                wrapped[i] = logging
            else:
                originals[(i, name)] = target
                setattr(args[i], name, logging)
        entry: dict = {"key": key, "callbacks": callbacks}
        try:
            result = self.fn(*wrapped)
        except (
            BaseException
        ) as exc:  # KeyboardInterrupt and SystemExit too: written down
            entry["raised"] = [type(exc).__name__, str(exc)[:500]]
            self.calls.append(entry)
            if isinstance(exc, Exception):
                raise
            raise RuntimeError(f"{type(exc).__name__} raised") from None
        finally:
            for (i, name), target in originals.items():
                setattr(args[i], name, target)
            entry["changed"] = [
                [path, encode(tensor)]
                for (path, old), (_, tensor) in zip(
                    before,
                    [(p, t) for p, t in _tensors_in(args) if t.device.type != "meta"],
                )
                if tensor.shape == old.shape and not torch.equal(tensor, old)
            ]
        entry["result"] = encode(result)
        self.calls.append(entry)
        return result


def _raise(name: str, message: str) -> None:
    if name == "NotImplementedError":
        raise NotImplementedError(message)
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        raise builtin(message)
    raise type(_identifier(name, "LearnerError"), (Exception,), {})(message)


class Replayer:
    """Stands in for the learner's function in the grader: answers each call from the
    record.

    Calls are matched by the fingerprint of their inputs, in the order they were made; a
    call with no recorded match raises ReplayError (which the check reports as an
    error). Before answering, it repeats the callbacks the learner's function made on
    the grader's own objects, and applies the in-place changes it made to its inputs."""

    def __init__(self, calls: list[dict]) -> None:
        self.pending: dict[str, list[dict]] = {}
        for entry in calls:
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                self.pending.setdefault(entry["key"], []).append(entry)

    def __call__(self, *args: Any) -> Any:
        queue = self.pending.get(fingerprint(args))
        if not queue:
            raise ReplayError(
                "the notebook's function was not called with these inputs when it "
                "ran (was the check changed or skipped in the notebook?)"
            )
        entry = queue.pop(0)
        for callback in entry.get("callbacks", [])[:10_000]:
            try:
                i, name = callback["target"]
                target = (
                    args[int(i)] if name is None else getattr(args[int(i)], str(name))
                )
                if (i, name) not in _callback_targets(args):
                    continue  # only the callables the check itself gave
                target(*decode(callback["args"]), **decode(callback["kwargs"]))
            except Exception:  # a callback that fails here failed for the learner too
                continue
        for path, value in entry.get("changed", []):
            try:
                tensor = args[path[0]]
                tensor = (
                    tensor[path[1]]
                    if isinstance(tensor, (list, tuple))
                    else (getattr(tensor, path[1]) if len(path) > 1 else tensor)
                )
                new = decode(value)
                if isinstance(tensor, torch.Tensor) and tensor.shape == new.shape:
                    with torch.no_grad():
                        tensor.copy_(new.to(tensor.dtype))
            except Exception:
                continue
        if "raised" in entry:
            name, message = entry["raised"]
            _raise(str(name), str(message))
        return decode(entry.get("result"))
