#include "hyperv/testing/fake_hypervisor.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "hyperv/testing/fake_hypercalls.h"
#include "hyperv/tlfs.h"

namespace vbus::hyperv::testing {

namespace {

// How long an idle VP thread waits before it looks at the stop flag again (it is also woken
// at once by every interrupt and by shutdown).
constexpr auto kVpPoll = std::chrono::milliseconds(100);
// The longest UnregisterInterrupt waits for a running handler: longer is a test bug.
constexpr absl::Duration kHandlerBound = absl::Seconds(60);

FakePartition::Config PartitionConfig(const FakeHypervisorOptions& options, uint32_t vp_count) {
  FakePartition::Config config;
  config.vp_count = vp_count;
  config.sint_polling_available = options.sint_polling_available;
  config.reserved_bit_pattern = options.reserved_bit_pattern;
  return config;
}

// Waits on `cv` until `done()` or `deadline`; returns done().
template <typename Done>
bool WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, absl::Time deadline,
               Done done) {
  while (!done()) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return done();
    cv.wait_for(lock, absl::ToChronoNanoseconds(std::min(left, absl::Seconds(1))));
  }
  return true;
}

std::unique_ptr<FakeGuestMemory> MemoryFor(const FakeHypervisorOptions& options) {
  if (options.external_memory.has_value()) {
    return std::make_unique<FakeGuestMemory>(*options.external_memory);
  }
  return std::make_unique<FakeGuestMemory>(std::max<size_t>(options.memory_pages, 1));
}

}  // namespace

FakeHypervisor::FakeHypervisor(FakeHypervisorOptions options)
    : vp_count_(std::clamp<uint32_t>(options.vp_count, 1, kMaxVps)),
      memory_(MemoryFor(options)),
      partition_(PartitionConfig(options, vp_count_), memory_.get()) {
  InstallDefaultCpuid(options);
  for (uint32_t vp = 0; vp < vp_count_; ++vp) vps_.push_back(std::make_unique<VpThread>());
  for (uint32_t vp = 0; vp < vp_count_; ++vp) {
    vps_[vp]->thread = std::thread([this, vp] { VpLoop(vp); });
  }
}

FakeHypervisor::~FakeHypervisor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& t : vps_) t->wake.notify_all();
  }
  for (auto& t : vps_) t->thread.join();
}

void FakeHypervisor::InstallDefaultCpuid(const FakeHypervisorOptions& options) {
  cpuid_[kCpuidLeafProcessorFeatures] = CpuidResult{0, 0, kCpuidEcxHypervisorPresent, 0};
  cpuid_[kCpuidLeafVendor] =
      CpuidResult{kCpuidLeafHardwareFeatures, kCpuidVendorEbx, kCpuidVendorEcx, kCpuidVendorEdx};
  cpuid_[kCpuidLeafInterface] = CpuidResult{kCpuidInterfaceHv1, 0, 0, 0};
  cpuid_[kCpuidLeafVersion] = CpuidResult{20348, 10u << 16, 0, 0};  // 10.0, build 20348
  cpuid_[kCpuidLeafFeatures] =
      CpuidResult{static_cast<uint32_t>(kPrivilegesVbusNeeds),
                  static_cast<uint32_t>(kPrivilegesVbusNeeds >> 32), 0,
                  options.sint_polling_available ? kFeatureSintPolling : 0};
  cpuid_[kCpuidLeafRecommendations] = CpuidResult{
      options.deprecate_auto_eoi ? kRecommendDeprecateAutoEoi : 0, kSpinlockRetriesNever, 48, 0};
  cpuid_[kCpuidLeafLimits] = CpuidResult{vp_count_, vp_count_, 0, 0};
  cpuid_[kCpuidLeafHardwareFeatures] = CpuidResult{};
}

// ---- CPUID and MSRs -------------------------------------------------------------------------

CpuidResult FakeHypervisor::Cpuid(uint32_t leaf) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cpuid_.find(leaf);
  return it == cpuid_.end() ? CpuidResult{} : it->second;
}

void FakeHypervisor::SetCpuid(uint32_t leaf, CpuidResult result) {
  std::lock_guard<std::mutex> lock(mu_);
  cpuid_[leaf] = result;
}

absl::StatusOr<uint64_t> FakeHypervisor::ReadMsr(uint32_t vp, uint32_t msr) {
  if (vp >= vp_count_) {
    return absl::InvalidArgumentError(absl::StrCat("FakeHypervisor: VP ", vp, " out of range"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  return partition_.ReadMsr(vp, msr);
}

absl::Status FakeHypervisor::WriteMsr(uint32_t vp, uint32_t msr, uint64_t value) {
  if (vp >= vp_count_) {
    return absl::InvalidArgumentError(absl::StrCat("FakeHypervisor: VP ", vp, " out of range"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = partition_.WriteMsr(vp, msr, value);
  DispatchLocked();
  return s;
}

// ---- Hypercalls ------------------------------------------------------------------------------

uint64_t FakeHypervisor::Hypercall(uint64_t control, uint64_t input_gpa, uint64_t output_gpa) {
  return Call(control, input_gpa, output_gpa);
}

uint64_t FakeHypervisor::FastHypercall(uint64_t control, uint64_t in0, uint64_t in1) {
  return Call(control, in0, in1);
}

uint64_t FakeHypervisor::Call(uint64_t control, uint64_t rdx, uint64_t r8) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++hypercalls_;
    if (!partition_.hypercall_page_enabled()) {
      partition_.RecordFault(FakeFault::Kind::kHypercallPageDisabled, 0,
                             absl::StrFormat("hypercall 0x%X before the hypercall page was "
                                             "enabled",
                                             control));
      return HypercallResult(kHvStatusInvalidPartitionState);
    }
  }
  DecodedCall call = DecodeHypercall(*memory_, control, rdx, r8);
  if (auto* refused = std::get_if<RefusedCall>(&call)) return HypercallResult(refused->hv_status);
  if (auto* post = std::get_if<PostMessageCall>(&call)) {
    return HypercallResult(Post(std::move(*post)));
  }
  return HypercallResult(Signal(std::get<SignalEventCall>(call)));
}

uint16_t FakeHypervisor::Post(PostMessageCall call) {
  PostedMessage message{call.connection_id, call.message_type, std::move(call.payload)};
  PostHandler handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = message_connections_.find(message.connection_id);
    if (it == message_connections_.end()) return kHvStatusInvalidConnectionId;
    if (injected_status_.has_value()) {
      const uint16_t status = *injected_status_;
      if (injected_left_.has_value() && --*injected_left_ <= 0) ClearPostMessageStatusLocked();
      return status;
    }
    posted_.push_back(message);
    handler = it->second;
  }
  if (handler) handler(message);
  return kHvStatusSuccess;
}

uint16_t FakeHypervisor::Signal(SignalEventCall call) {
  SignalledEvent event{call.connection_id, call.flag_number};
  SignalHandler handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = event_connections_.find(event.connection_id);
    if (it == event_connections_.end()) return kHvStatusInvalidConnectionId;
    if (event.flag_number >= it->second.flag_count) return kHvStatusInvalidParameter;
    signals_.push_back(event);
    handler = it->second.handler;
  }
  if (handler) handler(event);
  return kHvStatusSuccess;
}

// ---- Pages and interrupts -------------------------------------------------------------------

absl::StatusOr<Pages> FakeHypervisor::AllocatePages(size_t count) {
  return memory_->Allocate(count);
}

absl::Status FakeHypervisor::RegisterInterrupt(uint32_t vp, uint8_t vector,
                                               std::function<void()> handler) {
  if (vp >= vp_count_ || vector < kSintMinVector || !handler) {
    return absl::InvalidArgumentError(
        absl::StrCat("FakeHypervisor: cannot route vector ", vector, " on VP ", vp));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& handlers = vps_[vp]->handlers;
  if (handlers.count(vector) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("FakeHypervisor: vector ", vector, " on VP ", vp, " has a handler"));
  }
  handlers.emplace(vector, std::make_shared<const std::function<void()>>(std::move(handler)));
  return absl::OkStatus();
}

void FakeHypervisor::UnregisterInterrupt(uint32_t vp, uint8_t vector) {
  if (vp >= vp_count_) return;
  std::unique_lock<std::mutex> lock(mu_);
  VpThread& t = *vps_[vp];
  t.handlers.erase(vector);
  // Raised before its source was masked (e.g. by the EOM that delivered the last message): it
  // was the going registration's, not a spurious interrupt.
  t.pending.reset(vector);
  if (std::this_thread::get_id() == t.thread.get_id()) return;  // from a handler: see header
  const bool done =
      WaitUntil(changed_, lock, absl::Now() + kHandlerBound, [&] { return t.running != vector; });
  ABSL_RAW_CHECK(done, "FakeHypervisor: an interrupt handler ran for over a minute");
}

void FakeHypervisor::DispatchLocked() {
  for (const FakeInterrupt& i : partition_.TakeInterrupts()) {
    vps_[i.vp]->pending.set(i.vector);
    vps_[i.vp]->wake.notify_all();
  }
}

void FakeHypervisor::VpLoop(uint32_t vp) {
  std::unique_lock<std::mutex> lock(mu_);
  VpThread& t = *vps_[vp];
  while (!stopping_) {
    if (t.pending.none()) {
      changed_.notify_all();  // this VP is idle
      t.wake.wait_for(lock, kVpPoll);
      continue;
    }
    int vector = 255;
    while (!t.pending.test(vector)) --vector;
    t.pending.reset(vector);
    auto it = t.handlers.find(static_cast<uint8_t>(vector));
    if (it == t.handlers.end()) {
      partition_.RecordFault(FakeFault::Kind::kSpuriousInterrupt, vp,
                             absl::StrCat("vector ", vector, " on VP ", vp, " has no handler"));
      continue;
    }
    std::shared_ptr<const std::function<void()>> handler = it->second;
    t.running = vector;
    lock.unlock();
    (*handler)();
    lock.lock();
    t.running = -1;
    partition_.EndOfInterrupt(vp, static_cast<uint8_t>(vector));
    DispatchLocked();
    changed_.notify_all();
  }
}

bool FakeHypervisor::IdleLocked() const {
  for (const auto& t : vps_) {
    if (t->pending.any() || t->running != -1) return false;
  }
  return true;
}

bool FakeHypervisor::WaitForIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return WaitUntil(changed_, lock, deadline, [&] { return IdleLocked(); });
}

// ---- The host's side ------------------------------------------------------------------------

void FakeHypervisor::AddMessageConnection(uint32_t connection_id, PostHandler handler) {
  std::lock_guard<std::mutex> lock(mu_);
  message_connections_[connection_id] = std::move(handler);
}

void FakeHypervisor::RemoveMessageConnection(uint32_t connection_id) {
  std::lock_guard<std::mutex> lock(mu_);
  message_connections_.erase(connection_id);
}

void FakeHypervisor::AddEventConnection(uint32_t connection_id, uint16_t flag_count,
                                        SignalHandler handler) {
  std::lock_guard<std::mutex> lock(mu_);
  event_connections_[connection_id] = EventConnection{flag_count, std::move(handler)};
}

void FakeHypervisor::RemoveEventConnection(uint32_t connection_id) {
  std::lock_guard<std::mutex> lock(mu_);
  event_connections_.erase(connection_id);
}

void FakeHypervisor::InjectPostMessageStatus(std::optional<int> times, uint16_t hv_status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (times.has_value() && *times <= 0) {
    ClearPostMessageStatusLocked();
    return;
  }
  injected_status_ = hv_status;
  injected_left_ = times;
}

void FakeHypervisor::ClearPostMessageStatus() {
  std::lock_guard<std::mutex> lock(mu_);
  ClearPostMessageStatusLocked();
}

void FakeHypervisor::ClearPostMessageStatusLocked() {
  injected_status_.reset();
  injected_left_.reset();
}

absl::Status FakeHypervisor::QueueMessage(uint32_t vp, uint32_t sint, uint32_t message_type,
                                          absl::Span<const uint8_t> payload, uint64_t sender) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = partition_.QueueMessage(vp, sint, message_type, payload, sender);
  DispatchLocked();
  return s;
}

absl::StatusOr<bool> FakeHypervisor::SetEventFlag(uint32_t vp, uint32_t sint, uint32_t flag) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<bool> raised = partition_.SetEventFlag(vp, sint, flag);
  DispatchLocked();
  return raised;
}

absl::StatusOr<absl::Span<uint8_t>> FakeHypervisor::HostView(uint64_t gpa, size_t bytes) {
  uint8_t* p = memory_->Translate(gpa, bytes);
  if (p == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("FakeHypervisor: %u bytes at GPA 0x%X are not guest memory", bytes, gpa));
  }
  return absl::Span<uint8_t>(p, bytes);
}

absl::StatusOr<std::vector<uint32_t>> FakeHypervisor::TakeMonitorTriggers(
    uint64_t monitor_page_gpa) {
  absl::StatusOr<absl::Span<uint8_t>> view = HostView(monitor_page_gpa, sizeof(HvMonitorPage));
  if (!view.ok()) return view.status();
  auto* page = reinterpret_cast<HvMonitorPage*>(view->data());
  std::vector<uint32_t> ids;
  for (uint32_t group = 0; group < kMonitorGroups; ++group) {
    std::atomic_ref<uint32_t> pending(page->trigger_group[group].pending);
    // [HV-H6] acquire exchange: pairs with the guest's release when it sets a trigger bit
    // (after its ring writes; docs/protocol.md §12), so the host then sees those writes.
    uint32_t bits = pending.exchange(0, std::memory_order_acquire);
    for (uint32_t bit = 0; bit < kMonitorsPerGroup; ++bit) {
      if ((bits >> bit & 1) != 0) ids.push_back(group * kMonitorsPerGroup + bit);
    }
  }
  return ids;
}

absl::StatusOr<std::vector<uint32_t>> FakeHypervisor::TakeInterruptPageBits(
    uint64_t interrupt_page_gpa) {
  absl::StatusOr<absl::Span<uint8_t>> view = HostView(interrupt_page_gpa, protocol::kPageSize);
  if (!view.ok()) return view.status();
  auto* words = reinterpret_cast<uint64_t*>(view->data() + kInterruptPageSendHalfOffset);
  std::vector<uint32_t> bits;
  for (uint32_t w = 0; w < kInterruptPageSendHalfOffset / 8; ++w) {
    // [HV-H7] acquire exchange: pairs with the guest's release OR setting a relid bit in the
    // send half (Backend::SignalHost's order), as [HV-H6] does for monitor triggers.
    uint64_t word = std::atomic_ref<uint64_t>(words[w]).exchange(0, std::memory_order_acquire);
    for (uint32_t bit = 0; bit < 64; ++bit) {
      if ((word >> bit & 1) != 0) bits.push_back(w * 64 + bit);
    }
  }
  return bits;
}

// ---- Records ---------------------------------------------------------------------------------

std::vector<PostedMessage> FakeHypervisor::TakePosted() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(posted_, {});
}

std::vector<SignalledEvent> FakeHypervisor::TakeSignals() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(signals_, {});
}

std::vector<FakeMsrWrite> FakeHypervisor::TakeMsrWrites() {
  std::lock_guard<std::mutex> lock(mu_);
  return partition_.TakeMsrWrites();
}

std::vector<FakeFault> FakeHypervisor::TakeFaults() {
  std::lock_guard<std::mutex> lock(mu_);
  return partition_.TakeFaults();
}

uint64_t FakeHypervisor::hypercall_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hypercalls_;
}

size_t FakeHypervisor::queued_messages(uint32_t vp, uint32_t sint) const {
  std::lock_guard<std::mutex> lock(mu_);
  return partition_.queued_messages(vp, sint);
}

}  // namespace vbus::hyperv::testing
