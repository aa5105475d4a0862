"""vbus_fuzzer: a libFuzzer target that also builds and runs in ordinary configurations."""

def vbus_fuzzer(name, srcs, deps, corpus):
    """Declares a fuzz binary and a test that replays its seed corpus.

    `name`: under --config=fuzz, a libFuzzer binary (bazel run --config=fuzz //test/fuzz:name
    -- -max_total_time=30 test/fuzz/corpus/<corpus>); otherwise the same entry point with the
    fuzz_main replay driver, so it always builds.
    `name`_corpus_test: runs every file of corpus/<corpus> through the entry point (any config).
    """
    native.cc_binary(
        name = name,
        testonly = True,
        srcs = srcs,
        deps = deps + select({
            ":fuzzing": [],
            "//conditions:default": [":fuzz_main"],
        }),
        linkopts = select({
            # The C++ part of the UBSan runtime (vptr checks): Bazel links with `clang`, which
            # links only the C runtime by default.
            ":fuzzing": [
                "-fsanitize=fuzzer",
                "-fsanitize-link-c++-runtime",
            ],
            "//conditions:default": [],
        }),
    )
    native.cc_test(
        name = name + "_corpus_test",
        srcs = srcs,
        deps = deps + [":fuzz_main"],
        data = native.glob(["corpus/" + corpus + "/*"]),
        args = ["test/fuzz/corpus/" + corpus],
    )
