"""Offline rules_java shim for Bazel 4: re-exports the native Java rules.

@bazel_tools//tools/jdk is a registered toolchain package and loads @rules_java//java:defs.bzl
even for pure C++ builds; vbus has no Java, so thin aliases are all it needs.
"""

java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_package_configuration = native.java_package_configuration
java_plugin = native.java_plugin
java_runtime = native.java_runtime
java_test = native.java_test
java_toolchain = native.java_toolchain
