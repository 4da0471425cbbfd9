"""The CPU record of benchmarks and of the tuning cache's key (``linscan._host``)."""

from linscan import _host

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma avx2 bmi2

processor\t: 1
model name\t: something else
"""

GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def test_x86_record_names_model_family_and_vector_level():
    fields = _host.parse_cpuinfo(EPYC)
    assert fields["model name"] == "AMD EPYC 7B13"  # the first processor's block only
    record = _host.describe(fields, "x86_64", "", cpus=2, usable=2)
    assert record == {
        "cpu": "AMD EPYC 7B13 (family 25, model 1)",
        "cpus": 2,
        "usable_cpus": 2,
        "vector": "AVX2",
        "machine": "x86_64",
    }
    assert _host.summary(record) == (
        "AMD EPYC 7B13 (family 25, model 1), 2 CPUs (2 usable), AVX2, x86_64"
    )


def test_arm_and_unknown_records():
    arm = _host.describe(_host.parse_cpuinfo(GRAVITON), "aarch64", "", cpus=64, usable=8)
    assert arm["cpu"] == "aarch64 (implementer 0x41, part 0xd40)" and arm["vector"] == "SVE"
    bare = _host.describe({}, "arm64", "arm", cpus=8, usable=8)  # macOS: no /proc/cpuinfo
    assert bare["cpu"] == "arm" and bare["vector"] == "unknown"


def test_vector_level_takes_the_widest():
    assert _host.vector_level("sse2 avx avx2 avx512f".split()) == "AVX-512"
    assert _host.vector_level(["avx"]) == "AVX"
    assert _host.vector_level([]) == "unknown"


def test_this_machine_has_a_record():
    record = _host.cpu()
    assert record["cpu"] and record["cpus"] >= record["usable_cpus"] >= 1
    assert record["vector"] in {name for _, name in _host._VECTOR_FLAGS} | {"unknown"}
