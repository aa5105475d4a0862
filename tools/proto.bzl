"""vbus_proto_library: .proto files → a C++ library, with the system protoc.

Bazel 4's native proto_library/cc_proto_library need @com_google_protobuf, which would be
downloaded. vbus instead runs Debian's `protoc` (and `grpc_cpp_plugin` for services) in a
genrule and wraps the generated sources in a cc_library that links the system runtime through
//third_party. One line per proto in a BUILD file:

    vbus_proto_library(name = "control_proto", srcs = ["control.proto"])
    vbus_proto_library(name = "host_proto", srcs = ["host.proto"],
                       deps = [":control_proto"], grpc = True)

Imports are written from the workspace root (`import "proto/control.proto";`); generated
headers are included the same way (`#include "proto/control.pb.h"`).
"""

def vbus_proto_library(name, srcs, deps = [], grpc = False, visibility = None, testonly = False):
    """Generates C++ (and, with grpc = True, gRPC service) code for `srcs`.

    Args:
      name: the cc_library; `name + "_srcs"` is a filegroup of the .proto files (for
        dependents and for tools such as Python stub generation).
      srcs: .proto files in this package.
      deps: other vbus_proto_library targets whose protos `srcs` import.
      grpc: also run grpc_cpp_plugin and link gRPC.
      visibility: as usual.
      testonly: as usual.
    """
    stems = [s[:-len(".proto")] for s in srcs]
    outs = []
    for s in stems:
        outs += [s + ".pb.h", s + ".pb.cc"]
        if grpc:
            outs += [s + ".grpc.pb.h", s + ".grpc.pb.cc"]

    native.filegroup(
        name = name + "_srcs",
        srcs = srcs + [d + "_srcs" for d in deps],
        visibility = visibility,
        testonly = testonly,
    )

    cmd = "protoc --proto_path=. --cpp_out=$(GENDIR)"
    if grpc:
        cmd += " --grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin)"
    cmd += " " + " ".join(["$(location %s)" % s for s in srcs])

    native.genrule(
        name = name + "_gen",
        srcs = srcs + [name + "_srcs"],
        outs = outs,
        cmd = cmd,
        message = "protoc %s" % name,
        testonly = testonly,
    )

    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["//third_party:protobuf"] + (["//third_party:grpc"] if grpc else []),
        visibility = visibility,
        testonly = testonly,
    )
