// Every message of the vbus.v1 protocol survives serialize → parse unchanged, with every
// field set to a non-default value (so a field that failed to round-trip would show).
// Messages are filled through reflection, so a message added to proto/ is covered without
// editing this test.
#include <string>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "proto/control.pb.h"
#include "proto/mock_host.pb.h"

namespace vbus {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;
using google::protobuf::util::MessageDifferencer;

// Sets every field of `m` (one member per oneof: the first, unless `oneof_pick` names a field
// number for the oneof whose member it is) to a value derived from `seed` and the field number.
void Fill(Message* m, uint64_t seed, int depth, int oneof_pick = 0) {
  const Descriptor* d = m->GetDescriptor();
  const Reflection* r = m->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->real_containing_oneof() != nullptr) {
      const bool picked = oneof_pick != 0 ? f->number() == oneof_pick : f->index_in_oneof() == 0;
      if (!picked) continue;
    }
    const uint64_t v = seed * 1000003 + f->number() * 7919 + 1;
    const int copies = f->is_repeated() ? 3 : 1;
    for (int c = 0; c < copies; ++c) {
      const uint64_t x = v + c * 104729;
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          f->is_repeated() ? r->AddInt32(m, f, -static_cast<int32_t>(x % 100000) - 1)
                           : r->SetInt32(m, f, -static_cast<int32_t>(x % 100000) - 1);
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          f->is_repeated() ? r->AddInt64(m, f, -static_cast<int64_t>(x) - 1)
                           : r->SetInt64(m, f, -static_cast<int64_t>(x) - 1);
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          f->is_repeated() ? r->AddUInt32(m, f, static_cast<uint32_t>(x) | 0x80000000u)
                           : r->SetUInt32(m, f, static_cast<uint32_t>(x) | 0x80000000u);
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          f->is_repeated() ? r->AddUInt64(m, f, x | (1ull << 63))
                           : r->SetUInt64(m, f, x | (1ull << 63));
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          f->is_repeated() ? r->AddBool(m, f, true) : r->SetBool(m, f, true);
          break;
        case FieldDescriptor::CPPTYPE_ENUM: {
          const auto* e = f->enum_type();
          const auto* val = e->value(e->value_count() - 1);  // the last, never the default 0
          f->is_repeated() ? r->AddEnum(m, f, val) : r->SetEnum(m, f, val);
          break;
        }
        case FieldDescriptor::CPPTYPE_STRING: {
          std::string s = f->type() == FieldDescriptor::TYPE_BYTES
                              ? std::string("\x00\xff\x80", 3) + std::to_string(x)
                              : "text-" + std::to_string(x);
          f->is_repeated() ? r->AddString(m, f, s) : r->SetString(m, f, s);
          break;
        }
        case FieldDescriptor::CPPTYPE_MESSAGE:
          if (depth < 4) {
            Message* sub = f->is_repeated() ? r->AddMessage(m, f) : r->MutableMessage(m, f);
            Fill(sub, x, depth + 1);
          }
          break;
        default:
          FAIL() << "unhandled field type in " << f->full_name();
      }
    }
  }
}

void ExpectRoundTrip(const Message& original) {
  std::string wire;
  ASSERT_TRUE(original.SerializeToString(&wire)) << original.GetTypeName();
  std::unique_ptr<Message> parsed(original.New());
  ASSERT_TRUE(parsed->ParseFromString(wire)) << original.GetTypeName();
  std::string diff;
  MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(original, *parsed)) << original.GetTypeName() << ": " << diff;
}

// All message types defined in a file, nested ones included.
void Collect(const Descriptor* d, std::vector<const Descriptor*>* out) {
  out->push_back(d);
  for (int i = 0; i < d->nested_type_count(); ++i) Collect(d->nested_type(i), out);
}

std::vector<const Descriptor*> MessagesOf(const FileDescriptor* file) {
  std::vector<const Descriptor*> out;
  for (int i = 0; i < file->message_type_count(); ++i) Collect(file->message_type(i), &out);
  return out;
}

TEST(ProtoRoundTripTest, EveryControlMessageKind) {
  const Descriptor* d = v1::ControlMessage::descriptor();
  const auto* oneof = d->FindOneofByName("message");
  ASSERT_NE(oneof, nullptr);
  EXPECT_EQ(oneof->field_count(), 20) << "every channel message but GPADL_BODY, which travels "
                                         "inside GpadlCreate (docs/protocol.md §5)";
  for (int i = 0; i < oneof->field_count(); ++i) {
    const FieldDescriptor* f = oneof->field(i);
    v1::ControlMessage m;
    Fill(&m, i + 1, 0, f->number());
    ASSERT_TRUE(m.GetReflection()->HasField(m, f)) << f->name();
    ExpectRoundTrip(m);
  }
}

TEST(ProtoRoundTripTest, EveryMessageOfBothFiles) {
  google::protobuf::DynamicMessageFactory factory;
  int count = 0;
  for (const FileDescriptor* file :
       {v1::ControlMessage::descriptor()->file(), v1::GuestToHost::descriptor()->file()}) {
    for (const Descriptor* d : MessagesOf(file)) {
      std::unique_ptr<Message> m(factory.GetPrototype(d)->New());
      Fill(m.get(), ++count, 0);
      ExpectRoundTrip(*m);
      // A message with fields must really have been filled, or the check above proves nothing.
      if (d->field_count() > 0) {
        EXPECT_GT(m->ByteSizeLong(), 0u) << d->full_name();
      }
    }
  }
  EXPECT_GT(count, 40);
}

TEST(ProtoRoundTripTest, OfferKeepsAllFields) {
  v1::ControlMessage m;
  v1::Offer* offer = m.mutable_offer();
  offer->mutable_interface_type()->set_value("57164f39-9115-4e78-ab55-382f3bd5422d");
  offer->mutable_interface_instance()->set_value("00000000-0000-0000-0000-000000000001");
  offer->set_child_relid(2047);
  offer->set_sub_channel_index(3);
  offer->set_flags(0x2000);
  offer->set_mmio_megabytes(8);
  offer->set_user_defined(std::string(120, '\x5a'));
  offer->set_monitor_id(127);
  offer->set_monitor_allocated(true);
  offer->set_dedicated_interrupt(true);
  offer->set_connection_id(0x10000);
  std::string wire = m.SerializeAsString();
  v1::ControlMessage back;
  ASSERT_TRUE(back.ParseFromString(wire));
  ASSERT_EQ(back.message_case(), v1::ControlMessage::kOffer);
  EXPECT_EQ(back.offer().child_relid(), 2047u);
  EXPECT_EQ(back.offer().user_defined().size(), 120u);
  EXPECT_EQ(back.offer().connection_id(), 0x10000u);
  EXPECT_TRUE(back.offer().monitor_allocated());
}

TEST(ProtoRoundTripTest, LongGpadlPfnListSurvives) {
  v1::ControlMessage m;
  v1::GpadlCreate* g = m.mutable_gpadl_create();
  g->set_child_relid(5);
  g->set_gpadl(0xE1E10);
  for (uint64_t i = 0; i < 4096; ++i) g->add_pfns(0x100000 + i);
  g->set_byte_count(4096 * 4096);
  v1::ControlMessage back;
  ASSERT_TRUE(back.ParseFromString(m.SerializeAsString()));
  ASSERT_EQ(back.gpadl_create().pfns_size(), 4096);
  EXPECT_EQ(back.gpadl_create().pfns(4095), 0x100000u + 4095);
}

}  // namespace
}  // namespace vbus
