#include "ir/module.h"

#include <string>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "ir/instruction_text.h"
#include "ir/plan_io.h"

namespace ppc::ir {
namespace {

using google::protobuf::util::MessageDifferencer;


void AddProgram(google::protobuf::RepeatedPtrField<StageProgram>* programs, int stage, int slots,
                const std::vector<std::string>& lines) {
  StageProgram* p = programs->Add();
  p->set_stage(stage);
  p->set_num_slots(slots);
  for (const std::string& line : lines) {
    auto in = ParseInstruction(line);
    ASSERT_TRUE(in.ok()) << line << ": " << in.status();
    *p->add_instructions() = *in;
  }
}

// A plan with every instruction kind, odd values included (negative numbers, huge
// numbers, enum values that name nothing, an empty instruction), a header with maps,
// and eval programs.
Plan EveryKindOfPlan() {
  Plan plan;
  plan.set_format_version(5);
  plan.set_fingerprint("0123456789abcdef");
  plan.set_unverified(true);
  plan.mutable_model()->set_name("m");
  LayerSpec* l = plan.mutable_model()->add_layers();
  l->set_name("fc");
  l->set_kind("Linear");
  (*l->mutable_attrs())["out_features"].set_i(4);
  (*l->mutable_attrs())["bias"].set_b(true);
  (*l->mutable_attrs())["in_features"].set_i(3);
  plan.mutable_topology()->set_num_stages(2);
  plan.mutable_config()->set_micro_batches(4);
  plan.mutable_config()->set_schedule("1f1b");
  auto* vs = plan.mutable_placement()->add_virtual_stages();
  vs->set_end(1);
  plan.add_boundaries()->add_tensors()->add_shape(7);
  plan.set_level(LOWERED);
  AddProgram(plan.mutable_programs(), 0, 3,
             {"load_micro_batch mb=1 slot=0 inputs=true labels=false",
              "load_micro_batch mb=0 slot=2 inputs=true labels=true", "compute kind=FORWARD vs=0 mb=3 slot=1",
              "compute kind=BACKWARD_WEIGHT vs=-3 mb=2147483647 slot=-2147483648",
              "send direction=ACTIVATION boundary=0 mb=0 slot=0", "recv direction=GRADIENT boundary=2 mb=1 slot=3",
              "wait ops=[recv/activation/0/0,send/gradient/1/0]", "wait ops=[send/activation/-1/5]",
              "reduce_tied_grads tie_key=\"embed\" stages=[0,3]", "reduce_grads", "optimizer_step sharded=true",
              "optimizer_step sharded=false", "gather_params", "clip_grad_norm max_norm=0.1 stages=[0,1,2]",
              "compute kind=BACKWARD_WEIGHT vs=1 mb=2 slot=1 deferred=true"});
  AddProgram(plan.mutable_programs(), 1, 0, {"compute kind=FORWARD vs=0 mb=0 slot=0"});
  // Values a parser of the text form refuses but a binary file may hold.
  StageProgram* odd = plan.mutable_programs(1);
  odd->add_instructions();  // empty
  odd->add_instructions()->mutable_compute()->set_kind(static_cast<ComputeKind>(77));
  odd->add_instructions()->mutable_send()->set_direction(static_cast<Direction>(-5));
  CommRef* ref = odd->add_instructions()->mutable_wait()->add_ops();
  ref->set_direction(static_cast<Direction>(1000));
  ref->set_micro_batch(-1);
  odd->add_instructions()->mutable_wait();  // waits for nothing
  AddProgram(plan.mutable_eval_programs(), 0, 2,
             {"compute kind=FORWARD vs=0 mb=0 slot=0", "wait ops=[send/activation/0/0]"});
  AddProgram(plan.mutable_eval_programs(), -4, -1, {});
  return plan;
}

TEST(Module, ConvertsBothWaysWithoutLoss) {
  const Plan plan = EveryKindOfPlan();
  Module m = ToModule(plan);
  EXPECT_EQ(m.header.programs_size(), 0);
  EXPECT_EQ(m.header.eval_programs_size(), 0);
  ASSERT_EQ(m.programs.size(), 2u);
  ASSERT_EQ(m.eval_programs.size(), 2u);
  EXPECT_EQ(m.programs[0].size(), 15);
  EXPECT_EQ(m.programs[0].ops[3], Op::Compute(BACKWARD_WEIGHT, -3, 2147483647, -2147483648));
  EXPECT_EQ(m.programs[0].ops[14], Op::Compute(BACKWARD_WEIGHT, 1, 2, 1, /*deferred=*/true));
  EXPECT_TRUE(m.programs[0].ops[14].deferred());
  EXPECT_FALSE(m.programs[0].ops[3].deferred());
  EXPECT_EQ(m.programs[1].ops[2].kind, 77);
  EXPECT_EQ(m.programs[1].ops[3].kind, -5);
  EXPECT_EQ(m.programs[1].RefsOf(m.programs[1].ops[4])[0].direction, 1000);
  Plan back = ToPlan(m);
  EXPECT_TRUE(MessageDifferencer::Equals(back, plan)) << PrintPlan(back);
  for (int s = 0; s < 2; ++s) {
    for (int i = 0; i < m.programs[s].size(); ++i) {
      EXPECT_EQ(PrintOp(m.programs[s], i), PrintInstruction(plan.programs(s).instructions(i)));
    }
  }
}

TEST(Module, EncodesTheBytesOfProtobufsDeterministicSerialization) {
  const Plan plan = EveryKindOfPlan();
  const std::string want = DeterministicBytes(plan);
  EXPECT_EQ(EncodePlan(ToModule(plan)), want);
  // And without the optional parts: no version, fingerprint, model, programs.
  Plan bare;
  bare.mutable_topology()->set_num_stages(1);
  EXPECT_EQ(EncodePlan(ToModule(bare)), DeterministicBytes(bare));
  Plan only_programs;
  *only_programs.mutable_eval_programs() = plan.eval_programs();
  EXPECT_EQ(EncodePlan(ToModule(only_programs)), DeterministicBytes(only_programs));
  // A Wait with enough refs for a multi-byte length, a program longer than 16 KiB.
  Plan big = plan;
  Instruction* wait = big.mutable_programs(0)->add_instructions();
  for (int k = 0; k < 40; ++k) {
    CommRef* r = wait->mutable_wait()->add_ops();
    r->set_send(k % 2);
    r->set_direction(GRADIENT);
    r->set_boundary(k);
    r->set_micro_batch(100000 * k);
  }
  for (int k = 0; k < 4000; ++k) *big.mutable_programs(1)->add_instructions() = plan.programs(0).instructions(k % 14);
  Plan parsed;
  const std::string bytes = EncodePlan(ToModule(big));
  EXPECT_EQ(bytes, DeterministicBytes(big));
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  EXPECT_TRUE(MessageDifferencer::Equals(parsed, big));
}

TEST(Module, PlanHeaderIsEveryFieldButThePrograms) {
  // PlanHeader names Plan's fields one by one: a new field must be added there.
  EXPECT_EQ(Plan::descriptor()->field_count(), 11) << "add the new Plan field to ir::PlanHeader";
  Plan plan = EveryKindOfPlan();
  Plan want = plan;
  want.clear_programs();
  want.clear_eval_programs();
  EXPECT_TRUE(MessageDifferencer::Equals(PlanHeader(plan), want));
}

TEST(Module, PlanAndModuleHaveOneFingerprint) {
  const Plan plan = EveryKindOfPlan();
  EXPECT_EQ(Fingerprint(plan), Fingerprint(ToModule(plan)));
  Plan stamped = plan;
  Stamp(stamped);
  Module module = ToModule(plan);
  Stamp(module);
  EXPECT_EQ(module.header.fingerprint(), stamped.fingerprint());
  EXPECT_EQ(module.header.format_version(), kFormatVersion);
  EXPECT_TRUE(CheckStamp(ToPlan(module), "test").ok());
}

TEST(Module, AnyEditOfAnInstructionChangesTheFingerprint) {
  const Plan plan = EveryKindOfPlan();
  const std::string base = Fingerprint(plan);
  // Every scalar field of every instruction's message, one at a time, +1 (or flipped).
  int edits = 0;
  for (int s = 0; s < plan.programs_size(); ++s) {
    for (int i = 0; i < plan.programs(s).instructions_size(); ++i) {
      const Instruction& in = plan.programs(s).instructions(i);
      if (in.op_case() == Instruction::OP_NOT_SET) continue;
      const auto* field = Instruction::descriptor()->FindFieldByNumber(in.op_case());
      const google::protobuf::Message& op = in.GetReflection()->GetMessage(in, field);
      for (int f = 0; f < op.GetDescriptor()->field_count(); ++f) {
        const auto* fd = op.GetDescriptor()->field(f);
        if (fd->is_repeated() || fd->message_type() != nullptr) continue;
        Plan edited = plan;
        Instruction* e = edited.mutable_programs(s)->mutable_instructions(i);
        google::protobuf::Message* m = e->GetReflection()->MutableMessage(e, field);
        const auto* r = m->GetReflection();
        switch (fd->cpp_type()) {
          case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
            // Wrapping: some fields hold INT32_MAX.
            r->SetInt32(m, fd, static_cast<int32_t>(static_cast<uint32_t>(r->GetInt32(*m, fd)) + 1u));
            break;
          case google::protobuf::FieldDescriptor::CPPTYPE_ENUM:
            r->SetEnumValue(m, fd, r->GetEnumValue(*m, fd) + 1);
            break;
          case google::protobuf::FieldDescriptor::CPPTYPE_BOOL:
            r->SetBool(m, fd, !r->GetBool(*m, fd));
            break;
          case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
            r->SetDouble(m, fd, r->GetDouble(*m, fd) + 1);
            break;
          case google::protobuf::FieldDescriptor::CPPTYPE_STRING:
            r->SetString(m, fd, r->GetString(*m, fd) + "x");
            break;
          default:
            ADD_FAILURE() << "no edit for " << fd->full_name();
        }
        EXPECT_NE(Fingerprint(edited), base) << "edit of " << fd->full_name() << " at stage " << s << " instruction " << i;
        ++edits;
      }
    }
  }
  EXPECT_GE(edits, 40);  // every scalar field of the 14 + 5 instructions above
  // A Wait's refs, one field at a time; the order of instructions; the kind of an op.
  Plan edited = plan;
  edited.mutable_programs(0)->mutable_instructions(6)->mutable_wait()->mutable_ops(1)->set_boundary(2);
  EXPECT_NE(Fingerprint(edited), base);
  edited = plan;
  edited.mutable_programs(0)->mutable_instructions()->SwapElements(4, 5);
  EXPECT_NE(Fingerprint(edited), base);
  edited = plan;
  edited.mutable_programs(0)->mutable_instructions(9)->mutable_gather_params();
  EXPECT_NE(Fingerprint(edited), base);
  edited = plan;
  edited.mutable_programs(0)->set_num_slots(4);
  EXPECT_NE(Fingerprint(edited), base);
  // A training program moved to the eval programs.
  edited = plan;
  edited.mutable_eval_programs()->Add()->Swap(edited.mutable_programs(1));
  edited.mutable_programs()->RemoveLast();
  EXPECT_NE(Fingerprint(edited), base);
  // The header, but not the fingerprint field itself.
  edited = plan;
  edited.mutable_config()->set_micro_batches(5);
  EXPECT_NE(Fingerprint(edited), base);
  edited = plan;
  edited.set_fingerprint("ffffffffffffffff");
  EXPECT_EQ(Fingerprint(edited), base);
}

TEST(Module, WhereAWaitsRefsAreStoredIsNotPartOfItsHash) {
  Program a, b;
  const Ref r1{false, {0, 0, 0}, ACTIVATION, 0, 1}, r2{true, {0, 0, 0}, GRADIENT, 1, 2};
  a.AddWait({r1});
  a.AddWait({r2});
  // b stores the second Wait's refs first.
  b.refs = {r2, r1};
  Op w1 = Op::Plain(OpCode::kWait), w2 = Op::Plain(OpCode::kWait);
  w1.index = 1;
  w1.micro_batch = 1;
  w2.index = 0;
  w2.micro_batch = 1;
  b.ops = {w1, w2};
  EXPECT_EQ(HashPrograms({a}), HashPrograms({b}));
  EXPECT_EQ(PrintOp(b, 0), "wait ops=[recv/activation/0/1]");
  std::swap(b.ops[0], b.ops[1]);
  EXPECT_NE(HashPrograms({a}), HashPrograms({b}));
}

}  // namespace
}  // namespace ppc::ir
