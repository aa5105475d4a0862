// Drivers: what binds a device class to code, and the list of devices the bus knows.
//
// A `Driver` drives one device — one primary channel offer — through the public Channel API.
// A `DriverRegistry` maps device class GUIDs (an offer's interface_type) to driver factories.
// `DeviceList` keeps every offer the bus reported, matched or not, with its binding: the bus
// runtime adds each OfferAdded, probes a new driver for each match, and hands the driver back
// for Remove when the offer goes (OfferRemoved). Offers no driver claims stay listed, so an
// agent can show them and bind them later (DeviceList::Unbound after a late Register).
//
// Example:
//   DriverRegistry registry;
//   registry.Register({"heartbeat", device_class::kHeartbeat,
//                      [](const OfferInfo&) { return std::make_unique<HeartbeatDriver>(); }});
//   DeviceList devices(&registry);
//   // on OfferAdded(offer), on the offer's driver strand:
//   if (const DriverSpec* spec = devices.Add(offer)) {
//     std::unique_ptr<Driver> driver = spec->factory(offer);
//     absl::Status probed = driver->Probe(channel_for(offer));
//     if (probed.ok()) devices.Bind(offer.id, std::move(driver));
//     else devices.ProbeFailed(offer.id, probed);
//   }
//   // on OfferRemoved(id):
//   if (std::unique_ptr<Driver> d = devices.Remove(id)) d->Remove();
//
// Sub-channels are never matched: they belong to their primary's driver, which hears of each
// through Driver::SubChannelOffered / SubChannelRemoved on the device's strand; DeviceList
// lists them with their primary.
#ifndef VBUS_CORE_RUNTIME_DRIVER_H_
#define VBUS_CORE_RUNTIME_DRIVER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/data/guid.h"
#include "core/runtime/sync.h"
#include "core/state/bus_ids.h"
#include "core/state/offer_validation.h"

namespace vbus {

// The runtime's channel (core/runtime/channel.h): what a driver opens, sends on and receives from.
class Channel;

// Driver
// One instance per bound device. Both methods run on the device's driver strand (ChannelBus
// runs each device's Probe and Remove in offer order on a thread of that device's own, apart
// from its executor, so a Probe may wait for the host — e.g. open its channel — without
// holding up other devices). A Probe that blocks for long delays only its own device (and a
// Connect waiting for every probe).
class Driver {
 public:
  virtual ~Driver() = default;

  // Probe
  // Binds to `channel`, the primary channel of an offer of the driver's class (not yet open).
  // A driver normally opens it here. `channel` outlives the driver's binding (until Remove
  // returns). An error leaves the offer listed as unbound with the error (DeviceList).
  virtual absl::Status Probe(Channel& channel) = 0;

  // Remove
  // The device is going away: rescinded by the host, the link lost, the bus unloading or
  // shutting down. The channel is already retired (no callback runs any more); the driver
  // closes it (already closed after a rescind: Close completes OK at once), stops its work and
  // releases what it holds. Called at most once, only after a successful Probe. Sub-channels
  // still offered are closed already (their Close completes OK at once) and are not announced
  // to this driver again.
  virtual void Remove() = 0;

  // SubChannelOffered
  // The host offered a sub-channel of this device, normally because the driver asked for it
  // through its device protocol on the open primary (VMBus has no control message for that).
  // Called after a successful Probe, in offer order with the device's other events, on the
  // device's driver strand; never for a device whose Probe failed. The driver opens it here or
  // later, while the primary is open (Open fails otherwise); the primary's Close closes its
  // sub-channels first. `sub_channel` stays valid until SubChannelRemoved for it or Remove
  // returns. Blocking here (e.g. an Open waiting for the host) delays only this device.
  // Default: not used (the sub-channel stays offered and closed).
  virtual void SubChannelOffered(Channel& sub_channel) { (void)sub_channel; }

  // SubChannelRemoved
  // A sub-channel SubChannelOffered announced is gone (rescinded, the link lost, the bus
  // unloading or shutting down), before the device's own Remove if that is on its way too. It
  // is retired and closed already (Close completes OK at once); the driver drops what it holds.
  virtual void SubChannelRemoved(Channel& sub_channel, const absl::Status& reason) {
    (void)sub_channel;
    (void)reason;
  }

  // Suspend
  // The bus is suspending (ChannelBus::Suspend: hibernation). The driver quiesces its device
  // and closes its channel — the primary's Close closes its sub-channels first — and tears
  // down the GPADLs it created; it keeps its own state. Whatever it leaves open the bus closes
  // after it (and logs). `channel` stays the same object across the suspend and stays valid
  // until Remove; the device's sub-channels are removed once the suspend completes
  // (SubChannelRemoved), and asked for again at Resume. An error aborts the suspend: the
  // drivers already suspended are resumed and the bus stays connected.
  // Default: closes the channel (Resume's default reopens it).
  virtual absl::Status Suspend(Channel& channel, absl::Time deadline);

  // Resume
  // The host offered the device again after the resume — possibly under another relid,
  // connection id or monitor id, which `channel` (the same object) carries already. The driver
  // reopens the channel (new rings and GPADL), asks for its sub-channels again and restarts
  // its work. An error is logged and counted; the device stays bound (its channel closed).
  // A device the host did not offer again is removed (Remove) instead.
  // Default: reopens the channel with the options of its last open, if it was open when the
  // suspend began (Channel::Reopen, Channel::open_at_suspend).
  virtual absl::Status Resume(Channel& channel, absl::Time deadline);
};

// DriverSpec
// How to make a driver for one device class.
struct DriverSpec {
  // Short name for listings and logs ("heartbeat").
  std::string name;
  // Matched against OfferInfo::interface_type.
  Guid device_class;
  // Makes a driver for one offer; called on the offer's driver strand. Must not return null.
  std::function<std::unique_ptr<Driver>(const OfferInfo&)> factory;
};

// DriverRegistry
// Device class → driver. Thread-safe: Register and Match may run concurrently from any
// threads. Specs are never removed, so returned pointers stay valid for the registry's life.
class DriverRegistry {
 public:
  DriverRegistry() = default;
  DriverRegistry(const DriverRegistry&) = delete;
  DriverRegistry& operator=(const DriverRegistry&) = delete;

  // Register
  // Adds a driver. InvalidArgument for an empty name, a nil class or no factory;
  // AlreadyExists (naming the driver that has it) if the class is taken.
  absl::Status Register(DriverSpec spec);

  // Match
  // The driver for `offer`'s class, or nullptr: for unknown classes and for sub-channels.
  const DriverSpec* Match(const OfferInfo& offer) const;

  // Find
  // The driver registered for `device_class`, or nullptr.
  const DriverSpec* Find(const Guid& device_class) const;

  // The registered drivers' names, by class.
  std::vector<std::string> Names() const;

 private:
  mutable Mutex mu_;
  std::map<Guid, std::unique_ptr<DriverSpec>> by_class_ ABSL_GUARDED_BY(mu_);
};

// Where an offer stands with respect to drivers.
enum class Binding {
  kUnmatched,    // no driver for its class (yet)
  kMatched,      // a driver matches; not probed yet (or probe in progress)
  kBound,        // probed successfully; the driver owns the device
  kProbeFailed,  // the driver's Probe returned an error (kept in DeviceEntry::probe_error)
  kSubChannel,   // a sub-channel: belongs to its primary's driver
};
absl::string_view BindingName(Binding binding);

// DeviceEntry: one listed offer.
struct DeviceEntry {
  OfferInfo offer;
  Binding binding = Binding::kUnmatched;
  // The matching driver's name ("" when unmatched or a sub-channel).
  std::string driver;
  absl::Status probe_error;
};

// DeviceList
// Every offer the bus has reported and not yet removed, with its binding, and the bound
// drivers. Thread-compatible: the bus runtime calls it from its driver strands under one lock
// (which also guards its reads from other threads).
class DeviceList {
 public:
  // `registry` must outlive the list.
  explicit DeviceList(const DriverRegistry* registry) : registry_(registry) {}
  DeviceList(const DeviceList&) = delete;
  DeviceList& operator=(const DeviceList&) = delete;

  // Add
  // Lists a new offer. Returns the driver to probe for it, or nullptr if none matches (the
  // offer stays listed as unmatched) or it is a sub-channel. AlreadyExists-style misuse (the
  // same OfferId twice) keeps the first entry and returns nullptr.
  const DriverSpec* Add(const OfferInfo& offer);

  // Bind
  // Records a successfully probed driver for a matched offer. NotFound for an unlisted offer;
  // FailedPrecondition if it is not kMatched (already bound, unmatched, a sub-channel).
  absl::Status Bind(OfferId offer, std::unique_ptr<Driver> driver);

  // ProbeFailed
  // Records that the matching driver's Probe failed; the offer stays listed as kProbeFailed.
  // NotFound / FailedPrecondition as for Bind.
  absl::Status ProbeFailed(OfferId offer, absl::Status error);

  // Remove
  // Drops an offer from the list (it was removed by the bus). Returns its bound driver, for
  // the caller to call Driver::Remove on, or nullptr if none was bound (or it was not listed).
  std::unique_ptr<Driver> Remove(OfferId offer);

  // Unbound
  // Primary offers with no bound driver whose class now has one (kUnmatched entries are
  // re-matched against the registry and become kMatched): for binding after a late Register.
  // Offers whose Probe failed are not retried.
  std::vector<std::pair<OfferInfo, const DriverSpec*>> Unbound();

  // The bound driver of an offer, or nullptr.
  Driver* driver(OfferId offer) const;

  // Update
  // A listed offer came back after a resume with new fields (same id); unknown ids are
  // ignored.
  void Update(const OfferInfo& offer);

  // List
  // Every listed offer, by relid.
  std::vector<DeviceEntry> List() const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    DeviceEntry info;
    std::unique_ptr<Driver> driver;
  };
  const DriverRegistry* const registry_;
  std::map<OfferId, Entry> entries_;
};

}  // namespace vbus

#endif  // VBUS_CORE_RUNTIME_DRIVER_H_
