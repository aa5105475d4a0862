"""Drives the mock host from Python (Debian's python3-grpcio) to prove the API serves a client
that is not C++: stubs are generated from proto/ at test time (see GenerateStubs), a
mock_host process is started on a free loopback port, a Python guest attaches over GuestLink
with its own shared-memory file, and HostControl offers, lists and watches.

Usage: host_control_test.py MOCK_HOST_BINARY   (the sh_test wrapper passes it)
"""

import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

RPC_TIMEOUT = 30  # seconds, for every call
MOCK_HOST = None  # set from argv
PB = None  # generated modules, set by GenerateStubs
PB_GRPC = None


def GenerateStubs(out_dir):
    """Compiles proto/control.proto and proto/mock_host.proto into out_dir; imports them.

    The messages come from the system protoc (3.21, matching the python3-protobuf runtime) and
    the service stubs from Debian's grpc_python_plugin, both installed by tools/setup.sh.
    (Debian's python3-grpc-tools is no use here: it bundles protoc 3.5.1, which predates
    proto3 `optional`, used by HostSettings.)
    """
    global PB, PB_GRPC
    protos = ["proto/control.proto", "proto/mock_host.proto"]
    for p in protos:
        if not os.path.exists(p):
            raise RuntimeError("missing %s (run from the runfiles root)" % p)
    protoc = shutil.which("protoc")
    plugin = shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        raise RuntimeError("protoc and grpc_python_plugin are needed (Debian packages "
                           "protobuf-compiler and protobuf-compiler-grpc; run tools/setup.sh)")
    command = ([protoc, "-I.", "--plugin=protoc-gen-grpc_python=" + plugin,
                "--python_out=" + out_dir, "--grpc_python_out=" + out_dir] + protos)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("protoc failed: " + done.stderr)
    sys.path.insert(0, out_dir)
    from proto import mock_host_pb2, mock_host_pb2_grpc  # noqa: E402 (generated just now)
    PB, PB_GRPC = mock_host_pb2, mock_host_pb2_grpc


class MockHost:
    """mock_host as a child process, ready when it writes its address to a pipe."""

    def __init__(self, flags):
        read_fd, write_fd = os.pipe()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [MOCK_HOST, "--listen=127.0.0.1:0", "--ready_fd=%d" % write_fd] + flags,
            pass_fds=[write_fd], stderr=self.log)
        os.close(write_fd)
        line = b""
        deadline = time.monotonic() + RPC_TIMEOUT
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(left, 0))
            if not ready:
                raise RuntimeError("mock_host not ready: " + self.Log())
            chunk = os.read(read_fd, 256)
            if not chunk:
                raise RuntimeError("mock_host exited early: " + self.Log())
            line += chunk
        os.close(read_fd)
        self.target = line.decode().strip()

    def Log(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def Stop(self):
        self.proc.terminate()
        return self.proc.wait(timeout=RPC_TIMEOUT)


class PythonGuest:
    """A guest written in Python: its own memory file, one GuestLink stream."""

    PAGE = 4096

    def __init__(self, channel, name, pages=64):
        self.memory = tempfile.NamedTemporaryFile(dir=os.environ.get("TEST_TMPDIR"))
        self.memory.truncate(pages * self.PAGE)
        self.memory.flush()
        self.size = pages * self.PAGE
        self.requests = queue.Queue()
        stub = PB_GRPC.GuestLinkStub(channel)
        self.responses = stub.Connect(iter(self.requests.get, None), timeout=RPC_TIMEOUT * 4)
        layout = PB.MemoryLayout(revision=1, guest_event_page_pfn=0, host_event_page_pfn=1,
                                 doorbell_page_pfn=2, monitor_page1_pfn=3, monitor_page2_pfn=4,
                                 first_data_pfn=5)
        self.Send(PB.GuestToHost(attach=PB.Attach(
            guest_name=name, memory_path=self.memory.name, memory_size_bytes=self.size,
            layout=layout)))
        first = next(self.responses)
        assert first.HasField("attached"), first
        self.guest_id = first.attached.guest_id

    def Send(self, message):
        self.requests.put(message)

    def Control(self, **kwargs):
        from proto import control_pb2
        self.Send(PB.GuestToHost(control=control_pb2.ControlMessage(**kwargs)))

    def Next(self):
        return next(self.responses)

    def Close(self):
        self.requests.put(None)
        self.responses.cancel()
        self.memory.close()


class HostControlTest(unittest.TestCase):

    def setUp(self):
        self.host = MockHost(["--offer=echo"])
        self.channel = grpc.insecure_channel(self.host.target)
        grpc.channel_ready_future(self.channel).result(timeout=RPC_TIMEOUT)
        self.control = PB_GRPC.HostControlStub(self.channel)

    def tearDown(self):
        self.channel.close()
        code = self.host.Stop()
        log = self.host.Log()
        self.host.log.close()
        self.assertEqual(code, 0, log)

    def testOfferListWatch(self):
        from proto import control_pb2
        # Watch first; the initial metadata says the watch is registered.
        watch = self.control.WatchEvents(PB.WatchEventsRequest(), timeout=RPC_TIMEOUT)
        watch.initial_metadata()

        guest = PythonGuest(self.channel, "py-guest")
        try:
            self.assertEqual(guest.guest_id, "guest-1")
            guest.Control(initiate_contact=control_pb2.InitiateContact(
                version_requested=0x00050003, message_sint=2))
            version = guest.Next().control.version_response
            self.assertTrue(version.version_supported)
            self.assertEqual(version.message_connection_id, 4)
            guest.Control(request_offers=control_pb2.RequestOffers())
            echo_offer = guest.Next().control.offer
            self.assertEqual(echo_offer.child_relid, 1)
            self.assertTrue(guest.Next().control.HasField("all_offers_delivered"))

            # Offer: a hot-added sink with two sub-channels reaches the guest at once.
            reply = self.control.Offer(PB.OfferRequest(
                guest="py-guest", spec=PB.OfferSpec(device="sink", sub_channel_count=2)),
                timeout=RPC_TIMEOUT)
            self.assertEqual(reply.child_relid, 2)
            self.assertEqual(list(reply.sub_channel_relids), [3, 4])
            hot = [guest.Next().control.offer for _ in range(3)]
            self.assertEqual([o.child_relid for o in hot], [2, 3, 4])
            self.assertEqual([o.sub_channel_index for o in hot], [0, 1, 2])
            self.assertEqual(hot[0].interface_instance.value, reply.interface_instance.value)

            # List.
            guests = self.control.ListGuests(PB.ListGuestsRequest(), timeout=RPC_TIMEOUT)
            self.assertEqual([g.guest_name for g in guests.guests], ["py-guest"])
            self.assertEqual(guests.guests[0].state, PB.GUEST_STATE_OFFERS_DELIVERED)
            self.assertEqual(guests.guests[0].version, 0x00050003)
            channels = self.control.ListChannels(PB.ListChannelsRequest(guest="guest-1"),
                                                 timeout=RPC_TIMEOUT)
            self.assertEqual([(c.child_relid, c.device) for c in channels.channels],
                             [(1, "echo"), (2, "sink"), (3, "sink"), (4, "sink")])
            self.assertTrue(all(c.state == PB.CHANNEL_STATE_OFFERED for c in channels.channels))

            # Watch: the attach, the guest's and the host's messages, the hot-add, in order.
            seen = []
            for event in watch:
                seen.append(event)
                if (event.kind == PB.EVENT_KIND_HOST_MESSAGE and
                        event.message.HasField("offer") and event.child_relid == 4):
                    break
            kinds = [e.kind for e in seen]
            self.assertEqual(kinds[0], PB.EVENT_KIND_GUEST_ATTACHED)
            self.assertIn(PB.EVENT_KIND_GUEST_MESSAGE, kinds)
            sequences = [e.sequence for e in seen]
            self.assertEqual(sequences, sorted(sequences))
            self.assertTrue(all(e.guest_id == "guest-1" for e in seen))
        finally:
            watch.cancel()
            guest.Close()

    def testErrorsCarryStatusCodes(self):
        with self.assertRaises(grpc.RpcError) as failed:
            self.control.Offer(PB.OfferRequest(spec=PB.OfferSpec(device="echo")),
                               timeout=RPC_TIMEOUT)
        # No guest attached: the empty selector names nobody.
        self.assertEqual(failed.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        with self.assertRaises(grpc.RpcError) as failed:
            self.control.Rescind(PB.RescindRequest(guest="nobody", child_relid=1),
                                 timeout=RPC_TIMEOUT)
        self.assertEqual(failed.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as failed:
            self.control.Configure(PB.ConfigureRequest(
                settings=PB.HostSettings(max_version=0x00060000)), timeout=RPC_TIMEOUT)
        self.assertEqual(failed.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        settings = self.control.Configure(PB.ConfigureRequest(
            settings=PB.HostSettings(remap_relids_on_resume=True)), timeout=RPC_TIMEOUT)
        self.assertTrue(settings.remap_relids_on_resume)
        self.assertEqual(settings.max_version, 0x00050003)

    def testServerReflectionListsTheServices(self):
        # grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo with a hand-encoded
        # ServerReflectionRequest { list_services: "" } (field 7): no reflection stubs needed.
        call = self.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=None, response_deserializer=None)
        responses = call(iter([b"\x3a\x00"]), timeout=RPC_TIMEOUT)
        body = next(responses)
        self.assertIn(b"vbus.v1.HostControl", body)
        self.assertIn(b"vbus.v1.GuestLink", body)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: host_control_test.py MOCK_HOST_BINARY")
    MOCK_HOST = os.path.abspath(sys.argv.pop(1))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TEST_TMPDIR")) as stubs:
        GenerateStubs(stubs)
        unittest.main(verbosity=2)
