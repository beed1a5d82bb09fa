#!/usr/bin/python3
"""Golden and hostile PyTorch checkpoints for tests/unit/test_ckpt.c (run once by hand with
Debian's /usr/bin/python3 and python3-torch 1.13; outputs are committed, all small).

Writes tests/data/ckpt/:
  basic.ckpt       torch.save of a dict: every dtype, a 0-d and an empty tensor, nested dicts, a
                   list, an nn.Parameter, and scalars (int, float, str, None, bool)
  views.ckpt       non-contiguous views: transpose, slices with offsets, stride steps, expand
                   (stride 0), a 0-d view with an offset, storages shared between tensors
  wrapped.ckpt     a Lightning/SD-style {"state_dict": module.state_dict(), "global_step", "epoch",
                   "optimizer_states", ...} checkpoint
  proto4.ckpt      basic's dict saved with pickle_protocol=4 (FRAME, MEMOIZE, SHORT_BINUNICODE,
                   STACK_GLOBAL)
  deflate.ckpt     basic.ckpt re-zipped with deflate (storages cannot be used in place)
  numpy.ckpt       a wrapped checkpoint whose scalars are numpy scalars (and a set)
  *.expect         per tensor: "T name dtype shape hex(C-order bytes)" and "M key value" lines
  hostile/*.ckpt   malformed and malicious files; hostile.tsv lists "file<TAB>code<TAB>message part"
"""
import io
import os
import pickle
import struct
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "ckpt")
HOST = os.path.join(OUT, "hostile")

DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
      torch.uint8: "U8", torch.bool: "BOOL"}


def tensor_bytes(t):
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_expect(path, tensors, meta):
    with open(path, "w") as f:
        for name, t in tensors:
            f.write("T %s %s %s %s\n" % (name, DT[t.dtype], ",".join(str(s) for s in t.shape) or "-",
                                        tensor_bytes(t).hex() or "-"))
        for k, v in meta:
            f.write("M %s %s\n" % (k, v))


def basic_dict():
    g = torch.Generator().manual_seed(0)
    d = {
        "f32": torch.randn(2, 3, generator=g),
        "f16": torch.randn(4, generator=g).half(),
        "bf16": torch.randn(3, 2, generator=g).bfloat16(),
        "f64": torch.randn(2, generator=g).double(),
        "i64": torch.tensor([1, -2, 3 << 40]),
        "i32": torch.tensor([7, -8], dtype=torch.int32),
        "i16": torch.tensor([300, -300], dtype=torch.int16),
        "i8": torch.tensor([-5, 5], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "nested": {"x": torch.ones(2), "y": {"z": torch.full((1, 2), 2.0)}},
        "list": [torch.tensor([1.0]), torch.tensor([2.0, 3.0])],
        "param": torch.nn.Parameter(torch.tensor([0.25, 0.5])),
        "int": 5, "float": 0.1, "str": "hello", "none": None, "flag": True, "big": 1 << 40,
        "neg": -3, "exp": 1e-7,
    }
    tensors = [("f32", d["f32"]), ("f16", d["f16"]), ("bf16", d["bf16"]), ("f64", d["f64"]),
               ("i64", d["i64"]), ("i32", d["i32"]), ("i16", d["i16"]), ("i8", d["i8"]),
               ("u8", d["u8"]), ("bool", d["bool"]), ("scalar", d["scalar"]), ("empty", d["empty"]),
               ("nested.x", d["nested"]["x"]), ("nested.y.z", d["nested"]["y"]["z"]),
               ("list.0", d["list"][0]), ("list.1", d["list"][1]), ("param", d["param"])]
    meta = [("int", "5"), ("float", "0.1"), ("str", "hello"), ("none", "None"), ("flag", "True"),
            ("big", str(1 << 40)), ("neg", "-3"), ("exp", "1e-07")]
    return d, tensors, meta


def save(obj, name, **kw):
    path = os.path.join(OUT, name)
    torch.save(obj, path, **kw)
    return path


def main():
    os.makedirs(HOST, exist_ok=True)
    d, tensors, meta = basic_dict()
    save(d, "basic.ckpt")
    write_expect(os.path.join(OUT, "basic.expect"), tensors, meta)
    save(d, "proto4.ckpt", pickle_protocol=4)

    # deflate re-zip of basic
    src = zipfile.ZipFile(os.path.join(OUT, "basic.ckpt"))
    with zipfile.ZipFile(os.path.join(OUT, "deflate.ckpt"), "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    half = torch.arange(12, dtype=torch.float16).reshape(3, 4)
    views = {
        "base": base, "t": base.t(), "slice": base[1:3, 2:5], "flat_off": base.view(-1)[5:11],
        "step": base[:, ::2], "expand": torch.arange(3.0).reshape(3, 1).expand(3, 4),
        "elem": base[2, 3], "h_t": half.t()[1:], "h_row": half[2], "rev3": base.reshape(2, 3, 4).permute(2, 0, 1),
    }
    save(views, "views.ckpt")
    write_expect(os.path.join(OUT, "views.expect"), list(views.items()), [])

    torch.manual_seed(1)
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    sd = m.state_dict()
    from collections import OrderedDict
    sd2 = OrderedDict(("model.diffusion_model." + k, v) for k, v in sd.items())
    sd2._metadata = sd._metadata
    wrapped = {"state_dict": sd2, "global_step": 470000, "epoch": 6,
               "pytorch-lightning_version": "1.4.2",
               "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(2, 3), "step": 10}},
                                     "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]}],
               "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.5),
                                                 "monitor": None}}}
    save(wrapped, "wrapped.ckpt")
    write_expect(os.path.join(OUT, "wrapped.expect"), list(sd2.items()),
                 [("global_step", "470000"), ("epoch", "6"), ("pytorch-lightning_version", "1.4.2")])

    import numpy as np
    npd = {"state_dict": {"w": torch.ones(2, 2)}, "global_step": np.int64(470000), "epoch": np.int32(6),
           "score": np.float64(0.25), "half": np.float16(1.5), "single": np.float32(0.1),
           "flag": np.bool_(True), "neg": np.int8(-5), "u": np.uint16(65535), "tags": {"a", "b"}}
    save(npd, "numpy.ckpt")
    write_expect(os.path.join(OUT, "numpy.expect"), [("w", npd["state_dict"]["w"])],
                 [("global_step", "470000"), ("epoch", "6"), ("score", "0.25"), ("half", "1.5"),
                  ("single", repr(float(np.float32(0.1)))), ("flag", "True"), ("neg", "-5"),
                  ("u", "65535")])

    hostile()


# ------------------------------------------------------------------------------------------------
# Hostile files: hand-assembled pickles in torch's zip layout.

def mkzip(name, pkl, storages=None, prefix="archive", extra=None, method=zipfile.ZIP_STORED):
    path = os.path.join(HOST, name)
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr(prefix + "/data.pkl", pkl)
        for k, v in (storages or {}).items():
            z.writestr(prefix + "/data/" + k, v)
        z.writestr(prefix + "/version", "3\n")
        for k, v in (extra or {}).items():
            z.writestr(k, v)
    return name


def u(s):       # BINUNICODE
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def i1(x):
    return b"K" + bytes([x])


def glob(mod, name):
    return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"


def storage_pid(key, numel, stype="FloatStorage"):
    return b"(" + u("storage") + glob("torch", stype) + u(key) + u("cpu") + ints(numel) + b"tQ"


def ints(x):
    if 0 <= x < 256:
        return i1(x)
    if -(1 << 31) <= x < (1 << 31):
        return b"J" + struct.pack("<i", x)
    n = (x.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + x.to_bytes(n, "little", signed=True)


def tup(*xs):
    return b"(" + b"".join(xs) + b"t"


def rebuild(pid, offset, size, stride):
    return (glob("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + ints(offset) +
            tup(*[ints(s) for s in size]) + tup(*[ints(s) for s in stride]) + b"\x89" +
            glob("collections", "OrderedDict") + b")R" + b"tR")


def one(name, value):   # {name: value}
    return b"\x80\x02}" + u(name) + value + b"s."


F6 = struct.pack("<6f", *range(6))


class Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def hostile():
    import builtins
    import os as _os
    import subprocess
    cases = []

    def add(name, pkl, code, msg, **kw):
        cases.append((mkzip(name, pkl, **kw), code, msg))

    good_t = rebuild(storage_pid("0", 6), 0, (2, 3), (3, 1))
    add("os_system.ckpt", pickle.dumps({"x": Reduce(_os.system, ("echo pwned",))}, protocol=2),
        "EFORMAT", "refusing to load: pickle references posix.system")
    # protocol 2 writes Python 2 names (fix_imports): builtins -> __builtin__, subprocess -> commands
    add("eval.ckpt", pickle.dumps({"x": Reduce(builtins.eval, ("1+1",))}, protocol=3),
        "EFORMAT", "refusing to load: pickle references builtins.eval")
    add("exec.ckpt", pickle.dumps(Reduce(builtins.exec, ("import os",)), protocol=3),
        "EFORMAT", "refusing to load: pickle references builtins.exec")
    add("popen.ckpt", pickle.dumps({"x": Reduce(subprocess.Popen, (["id"],))}, protocol=3),
        "EFORMAT", "refusing to load: pickle references subprocess.Popen")
    add("popen2.ckpt", pickle.dumps({"x": Reduce(subprocess.Popen, (["id"],))}, protocol=2),
        "EFORMAT", "refusing to load: pickle references commands.Popen")
    add("getattr.ckpt", pickle.dumps(Reduce(getattr, (1, "real")), protocol=2),
        "EFORMAT", "__builtin__.getattr")
    add("py2_eval.ckpt", b"\x80\x02" + glob("__builtin__", "eval") + u("1") + b"\x85R.",
        "EFORMAT", "__builtin__.eval")
    add("stack_global.ckpt", pickle.dumps(Reduce(_os.system, ("id",)), protocol=4),
        "EFORMAT", "posix.system")
    add("torch_load.ckpt", b"\x80\x02" + glob("torch", "load") + u("x") + b"\x85R.",
        "EFORMAT", "pickle references torch.load")
    add("newobj.ckpt", b"\x80\x02" + glob("collections", "OrderedDict") + b")\x81.",
        "EFORMAT", "NEWOBJ")
    add("inst.ckpt", b"\x80\x02(" + u("id") + b"ios\nsystem\n.", "EFORMAT", "INST")
    add("obj.ckpt", b"\x80\x02(" + glob("collections", "OrderedDict") + b"o.", "EFORMAT", "OBJ")
    add("storage_call.ckpt", b"\x80\x02" + glob("torch", "FloatStorage") + b")R.",
        "EFORMAT", "pickle calls torch.FloatStorage")
    add("rebuild_str.ckpt", one("x", glob("torch._utils", "_rebuild_tensor_v2") + b"(" + u("0") +
                                i1(0) + tup(i1(2)) + tup(i1(1)) + b"\x89}tR"),
        "EFORMAT", "tensor storage is a str", storages={"0": F6})
    deep = b"\x80\x02}" + u("x") + b"]" * 200 + b"a" * 199 + b"s."
    add("deep.ckpt", deep, "EFORMAT", "nested more than 64 levels")
    add("marks.ckpt", b"\x80\x02" + b"(" * 70000 + b".", "EFORMAT", "marks", method=zipfile.ZIP_DEFLATED)
    add("memo_get.ckpt", b"\x80\x02}q\x00h\x05.", "EFORMAT", "memo index 5 not set")
    add("memo_put.ckpt", b"\x80\x02}r\xff\xff\xff\xff.", "EFORMAT", "memo index 4294967295 out of range")
    add("truncated.ckpt", b"\x80\x02}X\x10\x00\x00\x00abc", "EFORMAT", "pickle truncated")
    add("no_stop.ckpt", b"\x80\x02}" + u("a") + i1(1) + b"s", "EFORMAT", "without STOP")
    add("missing_storage.ckpt", one("x", rebuild(storage_pid("7", 6), 0, (2, 3), (3, 1))),
        "EFORMAT", "storage '7' is missing", storages={"0": F6})
    add("size_mismatch.ckpt", one("x", good_t), "EFORMAT", "storage '0' has 20 bytes", storages={"0": F6[:20]})
    add("out_of_bounds.ckpt", one("x", rebuild(storage_pid("0", 6), 0, (10,), (1,))),
        "EFORMAT", "outside storage '0'", storages={"0": F6})
    add("offset_oob.ckpt", one("x", rebuild(storage_pid("0", 6), 4, (3,), (1,))),
        "EFORMAT", "outside storage", storages={"0": F6})
    add("stride_overflow.ckpt", one("x", rebuild(storage_pid("0", 6), 0, (1 << 53,), (1 << 53,))),
        "EFORMAT", "extends past", storages={"0": F6})
    add("numel_overflow.ckpt", one("x", rebuild(storage_pid("0", 6), 0, (1 << 40, 1 << 40), (1, 1))),
        "EFORMAT", "too many elements", storages={"0": F6})
    add("negative_size.ckpt", one("x", rebuild(storage_pid("0", 6), 0, (-1,), (1,))),
        "EFORMAT", "size[0] is not an integer", storages={"0": F6})
    add("many_dims.ckpt", one("x", rebuild(storage_pid("0", 6), 0, (1,) * 9, (1,) * 9)),
        "EUNSUPPORTED", "9 dimensions", storages={"0": F6})
    add("empty_offset.ckpt", one("x", rebuild(storage_pid("0", 6), 9, (0,), (1,))),
        "EFORMAT", "past the end of storage", storages={"0": F6})
    add("neg_numel.ckpt", one("x", rebuild(storage_pid("0", -1), 0, (1,), (1,))),
        "EFORMAT", "numel is not an integer", storages={"0": F6})
    dup = b"\x80\x02}(" + u("x") + good_t + u("x") + good_t + b"u."
    add("dup_names.ckpt", dup, "EFORMAT", "tensor name 'x' appears twice", storages={"0": F6})
    add("top_list.ckpt", b"\x80\x02]" + good_t + b"a.", "EFORMAT", "holds a list, not a dict", storages={"0": F6})
    add("text_opcode.ckpt", b"\x80\x02I1\n.", "EFORMAT", "unsupported pickle opcode 'I'")
    add("huge_string.ckpt", b"\x80\x02X\xf0\xff\xff\xff" + b"a" * 10 + b".", "EFORMAT", "pickle truncated")
    add("bad_utf8.ckpt", b"\x80\x02X\x02\x00\x00\x00\xc3\x28.", "EFORMAT", "invalid UTF-8")
    add("big_long.ckpt", b"\x80\x02\x8a\x09" + b"\x01" * 9 + b".", "EFORMAT", "integer of 9 bytes")
    add("setitem_list.ckpt", b"\x80\x02]" + u("a") + i1(1) + b"s.", "EFORMAT", "SETITEM on a list")
    add("append_dict.ckpt", b"\x80\x02}" + i1(1) + b"a.", "EFORMAT", "APPEND on a dict")
    add("underflow.ckpt", b"\x80\x02R.", "EFORMAT", "stack underflow")
    add("mark_underflow.ckpt", b"\x80\x02(R.", "EFORMAT", "stack underflow")
    add("byteorder_big.ckpt", one("x", good_t), "EUNSUPPORTED", "byteorder", storages={"0": F6},
        extra={"archive/byteorder": "big"})
    add("complex.ckpt", one("x", rebuild(storage_pid("0", 3, "ComplexFloatStorage"), 0, (3,), (1,))),
        "EUNSUPPORTED", "torch.ComplexFloatStorage is not supported", storages={"0": F6})
    add("build_tensor.ckpt", one("x", good_t + b"}b"), "EFORMAT", "BUILD sets the state of a tensor",
        storages={"0": F6})
    add("codecs_utf8.ckpt", b"\x80\x02" + glob("_codecs", "encode") + u("x") + u("utf-8") + b"\x86R.",
        "EFORMAT", "_codecs.encode is only allowed")
    bomb = b"\x80\x02]" + b"2\x86" * 60 + b"q\x00}" + u("x") + b"h\x00s."
    add("dag_bomb.ckpt", bomb, "EFORMAT", "too large (shared references)")
    add("tuple_key.ckpt", b"\x80\x02}" + tup(i1(1)) + good_t + b"s.", "EFORMAT", "dict key is a tuple",
        storages={"0": F6})
    add("persid_shape.ckpt", one("x", u("storage") + b"Q"), "EFORMAT", "persistent id is not")
    add("reduce_noargs.ckpt", b"\x80\x02" + glob("collections", "OrderedDict") + i1(1) + b"R.",
        "EFORMAT", "REDUCE arguments are a int")
    add("ext.ckpt", b"\x80\x02\x82\x01.", "EFORMAT", "EXT")
    npdt = glob("numpy", "dtype")
    npsc = glob("numpy.core.multiarray", "scalar")
    add("np_object.ckpt", one("x", npdt + u("O8") + b"\x89\x88\x87R"), "EUNSUPPORTED", "numpy dtype 'O8'")
    add("np_size.ckpt", one("x", npsc + npdt + u("i8") + b"\x89\x88\x87R" + b"C\x03abc" + b"\x86R"),
        "EFORMAT", "numpy scalar of 3 bytes for dtype i8")
    add("np_big_endian.ckpt", one("x", npdt + u("i8") + b"\x89\x88\x87R" + tup(i1(3), u(">")) + b"b"),
        "EUNSUPPORTED", "big-endian numpy")
    add("np_scalar_str.ckpt", one("x", npsc + u("i8") + u("abc") + b"\x86R"), "EFORMAT",
        "numpy scalar() needs a dtype")
    add("proto9.ckpt", b"\x80\x09}.", "EFORMAT", "unsupported pickle protocol 9")
    # archive-level problems
    with zipfile.ZipFile(os.path.join(HOST, "no_pkl.ckpt"), "w") as z:
        z.writestr("archive/data/0", F6)
        z.writestr("archive/version", "3\n")
    cases.append(("no_pkl.ckpt", "EFORMAT", "no data.pkl"))
    with zipfile.ZipFile(os.path.join(HOST, "two_prefixes.ckpt"), "w") as z:
        z.writestr("a/data.pkl", one("x", good_t))
        z.writestr("b/data/0", F6)
    cases.append(("two_prefixes.ckpt", "EFORMAT", "members under both 'a/' and 'b/'"))
    with zipfile.ZipFile(os.path.join(HOST, "dup_storage.ckpt"), "w") as z:
        z.writestr("archive/data.pkl", one("x", good_t))
        z.writestr("archive/data/0", F6)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z.writestr("archive/data/0", F6)
    cases.append(("dup_storage.ckpt", "EFORMAT", "storage '0' appears twice"))
    with open(os.path.join(HOST, "not_zip.ckpt"), "wb") as f:
        f.write(b"this is not a checkpoint at all\n" * 4)
    cases.append(("not_zip.ckpt", "EFORMAT", "not a zip archive"))
    buf = io.BytesIO()
    pickle.dump(0x1950a86a20f9469cfc6c, buf, protocol=2)
    with open(os.path.join(HOST, "legacy.ckpt"), "wb") as f:
        f.write(buf.getvalue() + b"\x80\x02}.")
    cases.append(("legacy.ckpt", "EUNSUPPORTED", "legacy (pre-1.6)"))
    raw = open(os.path.join(OUT, "basic.ckpt"), "rb").read()
    with open(os.path.join(HOST, "truncated_zip.ckpt"), "wb") as f:
        f.write(raw[:len(raw) // 2])
    cases.append(("truncated_zip.ckpt", "EFORMAT", ""))
    with open(os.path.join(OUT, "hostile.tsv"), "w") as f:
        for name, code, msg in cases:
            f.write("%s\t%s\t%s\n" % (name, code, msg))
    print("%d hostile cases" % len(cases))


if __name__ == "__main__":
    main()
