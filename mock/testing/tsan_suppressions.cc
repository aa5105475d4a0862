// ThreadSanitizer suppressions for tests that run gRPC (linked into those tests only).
//
// Debian's gRPC, protobuf and Abseil libraries are not built with TSan. Their own memory accesses
// are invisible to TSan, but the libc calls they make (memcpy, epoll, ...) are intercepted, and
// their locks (absl::Mutex) are not: so TSan reports races between two gRPC threads that are
// in fact ordered by those locks. `called_from_lib` makes TSan ignore the intercepted calls
// made from inside these libraries only; every access by vbus code (instrumented) is still
// checked. gRPC's own inline (header) code is instrumented but synchronised by the
// uninstrumented library, so races whose stacks are in grpc:: functions are suppressed too
// (`race:^grpc::`); note this also hides a race in vbus code that runs inside a gRPC callback
// (the GuestLink reactor), which the other tests cover without gRPC. The std::function that
// gRPC's server keeps per callback request is destroyed by instrumented template code on a
// gRPC thread, in memory gRPC's client side last used under the library's own locks: hence
// `race:grpc::Server::CallbackRequest`. vbus's own code locks with core/runtime/sync.h (on
// std::mutex, which TSan sees).
extern "C" const char* __tsan_default_suppressions() {
  return "race:^grpc::\n"
         "race:grpc::Server::CallbackRequest\n"
         "called_from_lib:libgrpc.so.\n"
         "called_from_lib:libgrpc++.so.\n"
         "called_from_lib:libgpr.so.\n"
         "called_from_lib:libprotobuf.so.\n"
         "called_from_lib:libabsl_strings.so.\n"
         "called_from_lib:libabsl_strings_internal.so.\n"
         "called_from_lib:libabsl_str_format_internal.so.\n"
         "called_from_lib:libabsl_synchronization.so.\n"
         "called_from_lib:libabsl_graphcycles_internal.so.\n"
         "called_from_lib:libabsl_cord.so.\n"
         "called_from_lib:libabsl_cord_internal.so.\n"
         "called_from_lib:libabsl_cordz_info.so.\n"
         "called_from_lib:libabsl_status.so.\n"
         "called_from_lib:libabsl_statusor.so.\n"
         "called_from_lib:libabsl_time.so.\n"
         "called_from_lib:libabsl_time_zone.so.\n"
         "called_from_lib:libabsl_hash.so.\n"
         "called_from_lib:libabsl_city.so.\n"
         "called_from_lib:libabsl_low_level_hash.so.\n"
         "called_from_lib:libabsl_raw_hash_set.so.\n"
         "called_from_lib:libabsl_malloc_internal.so.\n"
         "called_from_lib:libabsl_base.so.\n"
         "called_from_lib:libabsl_spinlock_wait.so.\n"
         "called_from_lib:libabsl_stacktrace.so.\n"
         "called_from_lib:libabsl_symbolize.so.\n"
         "called_from_lib:libabsl_throw_delegate.so.\n"
         "called_from_lib:libabsl_int128.so.\n"
         "called_from_lib:libabsl_raw_logging_internal.so.\n";
}
