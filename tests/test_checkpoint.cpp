// Checkpoints: round trips, validation of damaged files (each with its message, and the
// model untouched), atomic saving under kill -9, and the file layout itself.
#include "checkpoint_fixture.hpp"
#include "support.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <thread>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

namespace dynrnn::test {
namespace {

namespace fs = std::filesystem;

fs::path scratch_dir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("dynrnn_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

template <class F>
std::string checkpoint_error(F&& call) {
  try {
    call();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "(no CheckpointError)";
}

TEST(Checkpoint, RoundTripRestoresEveryBit) {
  const fs::path dir = scratch_dir("roundtrip");
  TinyModel a;
  a.fake_step(0.3);
  a.fake_step(0.7);
  a.ckpt.metadata()["note"] = "two steps";
  a.ckpt.save((dir / "a.safetensors").string(), 2);

  TinyModel b(99);  // other weights, no slots yet
  EXPECT_NE(a.state(), b.state());
  EXPECT_EQ(b.ckpt.load((dir / "a.safetensors").string()), 2);
  EXPECT_EQ(a.state(), b.state());
  EXPECT_EQ(b.ckpt.metadata().at("note"), "two steps");
  EXPECT_EQ(b.ckpt.metadata().size(), 1u);

  // Training on from the loaded state is the same as training on from the saved one.
  a.fake_step(0.2);
  b.fake_step(0.2);
  EXPECT_EQ(a.state(), b.state());
  fs::remove_all(dir);
}

TEST(Checkpoint, SavesBeforeTheFirstStepWithStartingSlots) {
  TinyModel a, b(3);
  b.ckpt.load(safetensors::File::parse(a.ckpt.to_bytes(0), "fresh"));
  EXPECT_EQ(a.state(), b.state());
  // TensorFlow's RMSProp starts its mean square at 1.
  EXPECT_TRUE((b.opt.slots(b.lstm.kernel()).arrays[0] == 1.0).all());
}

TEST(Checkpoint, FloatModelLoadsItsOwnFile) {
  LSTMCell<float> cell(3, 5), other(3, 5);
  Rng rng(5);
  other.reset_parameters(rng);
  Checkpoint<float> save, load;
  save.add("rnn", cell);
  load.add("rnn", other);
  load.load(safetensors::File::parse(save.to_bytes(11), "float"));
  EXPECT_TRUE(identical(cell.kernel(), other.kernel()));
  EXPECT_TRUE(identical(cell.bias(), other.bias()));
}

// The file is plain safetensors: a JSON header padded to 8 bytes, tensors tiling the data,
// row-major values, and the metadata the format promises.
TEST(Checkpoint, FileLayoutIsSafetensors) {
  TinyModel m;
  m.fake_step(0.5);
  const std::vector<unsigned char> bytes = m.ckpt.to_bytes(7);
  const std::uint64_t n = safetensors::read_le64(bytes.data());
  EXPECT_EQ((8 + n) % 8, 0u);
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + std::ptrdiff_t(n));
  const auto& meta = header.at("__metadata__");
  EXPECT_EQ(meta.at("dynrnn.format"), "dynrnn-checkpoint-1");
  EXPECT_EQ(meta.at("dynrnn.version"), version);
  EXPECT_EQ(meta.at("dynrnn.step"), "7");
  EXPECT_EQ(meta.at("dynrnn.scalar"), "F64");
  EXPECT_EQ(meta.at("dynrnn.layer.lstm"), "LSTMCell(input_size=2, hidden_size=3)");
  EXPECT_EQ(meta.at("dynrnn.layer.dense"), "Dense(input_size=3, output_size=2)");
  std::vector<std::string> names;
  for (auto& [name, entry] : header.items())
    if (name != "__metadata__") names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "dense/bias", "dense/weight", "lstm/bias", "lstm/kernel", "opt/dense/bias/mg",
                       "opt/dense/bias/mom", "opt/dense/bias/ms", "opt/dense/weight/mg", "opt/dense/weight/mom",
                       "opt/dense/weight/ms", "opt/lstm/bias/mg", "opt/lstm/bias/mom", "opt/lstm/bias/ms",
                       "opt/lstm/kernel/mg", "opt/lstm/kernel/mom", "opt/lstm/kernel/ms"}));
  const auto& kernel = header.at("lstm/kernel");
  EXPECT_EQ(kernel.at("dtype"), "F64");
  EXPECT_EQ(kernel.at("shape"), nlohmann::json({5, 12}));
  const std::uint64_t begin = kernel.at("data_offsets")[0];
  double k01;  // row 0, column 1: row-major
  std::memcpy(&k01, bytes.data() + 8 + n + begin + sizeof(double), sizeof(double));
  EXPECT_EQ(k01, m.lstm.kernel()(0, 1));
}

// Every damaged file is refused with a CheckpointError naming the file and the problem, and
// the model is exactly as before.
TEST(Checkpoint, DamagedFilesAreRefusedAndChangeNothing) {
  TinyModel saved;
  saved.fake_step(0.5);
  const std::vector<unsigned char> valid = saved.ckpt.to_bytes(7);
  TinyModel target(42);
  target.fake_step(0.1);
  target.ckpt.metadata()["keep"] = "me";
  const std::vector<double> before = target.state();
  ASSERT_NO_THROW(TinyModel().ckpt.load(safetensors::File::parse(valid, "valid")));

  const auto cases = corruptions(valid);
  EXPECT_GE(cases.size(), 40u);
  for (const Corruption& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string what = checkpoint_error([&] { target.ckpt.load(safetensors::File::parse(c.bytes, "damaged.safetensors")); });
    EXPECT_NE(what.find("checkpoint 'damaged.safetensors': "), std::string::npos) << what;
    EXPECT_NE(what.find(c.fragment), std::string::npos) << "'" << c.fragment << "' not in: " << what;
    EXPECT_EQ(target.state(), before);
    EXPECT_EQ(target.ckpt.metadata().at("keep"), "me");
  }
}

// The header's JSON may be padded with any number of spaces, and with nothing else: the
// damaged files above include a NUL followed by bytes that are not JSON, which the JSON
// parser alone would stop at and accept.
TEST(Checkpoint, HeaderPaddingIsSpacesOnly) {
  TinyModel saved;
  saved.fake_step(0.5);
  const std::vector<unsigned char> valid = saved.ckpt.to_bytes(7);
  const std::uint64_t n = safetensors::read_le64(valid.data());
  const auto with_padding = [&](const std::string& pad) {
    std::vector<unsigned char> out;
    safetensors::append_le64(out, n + pad.size());
    out.insert(out.end(), valid.begin() + 8, valid.begin() + 8 + std::ptrdiff_t(n));
    out.insert(out.end(), pad.begin(), pad.end());
    out.insert(out.end(), valid.begin() + 8 + std::ptrdiff_t(n), valid.end());
    return out;
  };
  TinyModel target(42);
  EXPECT_EQ(target.ckpt.load(safetensors::File::parse(with_padding(std::string(24, ' ')), "spaces")), 7);
  EXPECT_EQ(target.state(), saved.state());
  for (const std::string& pad : {std::string("\0", 1), std::string("\t"), std::string(" \0{}", 4), std::string(" x")}) {
    const std::string what =
        checkpoint_error([&] { TinyModel(42).ckpt.load(safetensors::File::parse(with_padding(pad), "padded")); });
    EXPECT_NE(what.find("header is not valid JSON"), std::string::npos) << what;
    EXPECT_NE(what.find("file offset"), std::string::npos) << what;
  }
}

TEST(Checkpoint, EveryTruncationIsRefused) {
  TinyModel saved;
  const std::vector<unsigned char> valid = saved.ckpt.to_bytes(7);
  for (std::size_t size = 0; size < valid.size(); ++size) {
    const std::vector<unsigned char> cut(valid.begin(), valid.begin() + std::ptrdiff_t(size));
    EXPECT_THROW(safetensors::File::parse(cut, "cut"), CheckpointError) << "cut at " << size;
  }
}

// Any single byte of the header overwritten: refused with CheckpointError and nothing changed,
// or (when the byte lands in a metadata string the model does not check) loaded intact.
TEST(Checkpoint, EveryHeaderByteOverwrittenIsSafe) {
  TinyModel saved;
  saved.fake_step(0.5);
  const std::vector<unsigned char> valid = saved.ckpt.to_bytes(7);
  const std::uint64_t n = safetensors::read_le64(valid.data());
  auto target = std::make_unique<TinyModel>(42);
  const std::vector<double> before = target->state();
  int refused = 0, loaded = 0;
  for (std::size_t pos = 0; pos < 8 + n; ++pos)
    for (unsigned char value : {0x00, 0x22, 0x30, 0x7b, 0xff}) {
      if (valid[pos] == value) continue;
      std::vector<unsigned char> bytes = valid;
      bytes[pos] = value;
      try {
        target->ckpt.load(safetensors::File::parse(bytes, "byte"));
        ++loaded;
        EXPECT_EQ(target->state(), saved.state()) << "byte " << pos;
        target = std::make_unique<TinyModel>(42);
      } catch (const CheckpointError&) {
        ++refused;
        EXPECT_EQ(target->state(), before) << "byte " << pos;
      }
    }
  EXPECT_GT(refused, 1000);
  std::printf("%d overwritten header bytes refused, %d loaded intact\n", refused, loaded);
}

TEST(Checkpoint, ModelMismatchesAreNamed) {
  TinyModel a;
  const auto with_opt = a.ckpt.to_bytes(1);
  Checkpoint<double> no_opt;
  no_opt.add("lstm", a.lstm).add("dense", a.dense);
  const auto without_opt = no_opt.to_bytes(1);

  TinyModel b;
  EXPECT_NE(checkpoint_error([&] { b.ckpt.load(safetensors::File::parse(without_opt, "f")); })
                .find("tensor 'opt/lstm/kernel/ms' is missing"),
            std::string::npos);
  Checkpoint<double> c;
  c.add("lstm", b.lstm).add("dense", b.dense);
  EXPECT_NE(checkpoint_error([&] { c.load(safetensors::File::parse(with_opt, "f")); })
                .find("holds the unexpected tensor 'opt/dense/bias/mg'"),
            std::string::npos);

  LSTMCell<double> wide(2, 4);
  Checkpoint<double> d;
  d.add("lstm", wide);
  EXPECT_NE(checkpoint_error([&] { d.load(safetensors::File::parse(without_opt, "f")); })
                .find("holds LSTMCell(input_size=2, hidden_size=3) under 'lstm', but the model has "
                      "LSTMCell(input_size=2, hidden_size=4)"),
            std::string::npos);

  // A PyTorch state dict is safetensors, but not a dynrnn checkpoint.
  EXPECT_NE(checkpoint_error([&] { d.load(std::string(DYNRNN_TEST_DATA_DIR) + "/lstm_pytorch.safetensors"); })
                .find("metadata 'dynrnn.format' is missing"),
            std::string::npos);
  EXPECT_NE(checkpoint_error([&] { d.load("/nonexistent/dir/x.safetensors"); }).find("cannot open it for reading"),
            std::string::npos);
}

TEST(Checkpoint, RegistrationAndMetadataErrors) {
  TinyModel m;
  expect_invalid_argument([&] { m.ckpt.add("lstm", m.lstm); }, {"Checkpoint::add", "'prefix'", "new", "'lstm'"});
  expect_invalid_argument([&] { m.ckpt.add("lstm/kernel", m.lstm.kernel()); }, {"'name'", "'lstm/kernel'"});
  expect_invalid_argument([&] { m.ckpt.add("", m.dense.bias()); }, {"'name'", "non-empty"});
  expect_invalid_argument([&] { m.ckpt.add("opt", m.opt); }, {"'prefix'", "'opt'"});
  m.ckpt.metadata()["dynrnn.step"] = "5";
  expect_invalid_argument([&] { m.ckpt.to_bytes(1); }, {"'metadata'", "dynrnn.", "'dynrnn.step'"});
}

TEST(Checkpoint, SaveFailureNamesThePathAndLeavesNoFile) {
  TinyModel m;
  const std::string what = checkpoint_error([&] { m.ckpt.save("/nonexistent/dir/model.safetensors", 1); });
  EXPECT_NE(what.find("'/nonexistent/dir/model.safetensors'"), std::string::npos) << what;
  EXPECT_NE(what.find("cannot create the temporary file"), std::string::npos) << what;
  EXPECT_NE(what.find("No such file or directory"), std::string::npos) << what;

  const fs::path dir = scratch_dir("isdir");
  fs::create_directories(dir / "taken");
  const std::string over_dir = checkpoint_error([&] { m.ckpt.save((dir / "taken").string(), 1); });
  EXPECT_NE(over_dir.find("cannot rename"), std::string::npos) << over_dir;
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 0u) << "the temporary file was left behind";
  fs::remove_all(dir);
}

// kill -9 a process that saves checkpoints in a loop, again and again; after every kill the
// checkpoint loads and is one complete save (every value equals the saved step), and no
// completed save is lost. The child reports each completed save through a pipe, and each
// kill lands at a random moment within two of the child's own save times, measured on the
// spot, so that kills fall in every phase of a save however fast the machine and its disk
// are at the moment (a fixed window once missed every write on a loaded host).
TEST(Checkpoint, SurvivesKillDuringSave) {
  using Clock = std::chrono::steady_clock;
  const fs::path dir = scratch_dir("kill");
  const std::string path = (dir / "model.safetensors").string();
  // About 2.6 MB per file, so that a save takes long enough to be interrupted.
  LSTMCell<float> cell(64, 256);
  RMSProp<float> opt(0.01f);
  Checkpoint<float> ckpt;
  ckpt.add("lstm", cell).add("opt", opt);
  auto fill = [&](std::int64_t step) {
    cell.kernel().setConstant(float(step));
    cell.bias().setConstant(float(step));
    opt.slots(cell.kernel()).arrays[0].setConstant(float(step));
    opt.slots(cell.bias()).arrays[0].setConstant(float(step));
  };
  fill(0);
  ckpt.save(path, 0);

  // Reads the child's report of one completed save; false after 60 s without one.
  auto completed_save = [](int fd) {
    pollfd ready{fd, POLLIN, 0};
    char byte = 0;
    return ::poll(&ready, 1, 60000) == 1 && ::read(fd, &byte, 1) == 1;
  };
  // The reports a killed child left in the pipe: saves it completed after the last one read.
  auto remaining_saves = [](int fd) {
    std::int64_t n = 0;
    char bytes[64];
    for (ssize_t got; (got = ::read(fd, bytes, sizeof bytes)) > 0;) n += got;
    return n;
  };

  std::mt19937 rng(2026);
  std::int64_t last_step = 0;
  int kills = 0, interrupted_writes = 0;
  // At least 20 kills, and on until 5 have hit a write in progress (a temporary file was
  // left), or the test proved nothing; about one in four does.
  constexpr int kMinKills = 20, kMaxKills = 240, kWantedInterruptedWrites = 5;
  while (kills < kMinKills || (interrupted_writes < kWantedInterruptedWrites && kills < kMaxKills)) {
    int report[2];
    ASSERT_EQ(::pipe(report), 0) << std::strerror(errno);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(report[0]);
      try {
        for (std::int64_t step = last_step + 1;; ++step) {
          fill(step);
          ckpt.save(path, step);
          const char byte = 1;
          if (::write(report[1], &byte, 1) != 1) break;
        }
      } catch (...) {
      }
      ::_exit(3);  // never return into the test framework
    }
    ::close(report[1]);
    // Two completed saves: the time between them is a save here and now.
    const bool saved_once = completed_save(report[0]);
    const auto first = Clock::now();
    if (!saved_once || !completed_save(report[0])) {
      ::kill(child, SIGKILL);  // not left saving after the test
      ::waitpid(child, nullptr, 0);
      ::close(report[0]);
      FAIL() << "the saving process did not complete " << (saved_once ? "a second save" : "a save")
             << " within 60 s, kill " << kills;
    }
    const auto save_time = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - first);
    std::this_thread::sleep_for(std::chrono::microseconds(
        std::uniform_int_distribution<std::int64_t>(0, 2 * save_time.count())(rng)));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ++kills;
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the saving process ended on its own";
    const std::int64_t completed = 2 + remaining_saves(report[0]);
    ::close(report[0]);

    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().find(".tmp-") != std::string::npos) {
        ++interrupted_writes;
        fs::remove(e.path());
      }

    LSTMCell<float> loaded_cell(64, 256);
    RMSProp<float> loaded_opt(0.01f);
    Checkpoint<float> loaded;
    loaded.add("lstm", loaded_cell).add("opt", loaded_opt);
    std::int64_t step = -1;
    ASSERT_NO_THROW(step = loaded.load(path)) << "after kill " << kills;
    // Every reported save is on disk; one more may be, renamed before its report was sent.
    ASSERT_GE(step, last_step + completed) << "a completed save was lost, kill " << kills;
    ASSERT_LE(step, last_step + completed + 1) << "kill " << kills;
    const float v = float(step);
    EXPECT_TRUE((loaded_cell.kernel().array() == v).all()) << "kill " << kills << " step " << step;
    EXPECT_TRUE((loaded_cell.bias().array() == v).all());
    EXPECT_TRUE((loaded_opt.slots(loaded_cell.kernel()).arrays[0] == v).all());
    last_step = step;
  }
  EXPECT_GE(interrupted_writes, kWantedInterruptedWrites) << "after " << kills << " kills";
  std::printf("%d kills, %d during a write, %lld saves completed\n", kills, interrupted_writes,
              static_cast<long long>(last_step));
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------
// Resuming mid-run with every optimiser, a learning-rate schedule and global-norm clipping.

// LSTM -> last output -> Dense -> softmax cross-entropy, trained with `Opt` under a warm-up
// and cosine schedule and clipping at a norm small enough to act. The data of each step is
// drawn from the step number, so a resumed run sees what an uninterrupted one does.
template <class Opt>
struct ResumableRun {
  LSTMCell<double> lstm{3, 5};
  Dense<double> dense{5, 3};
  Opt opt;
  Checkpoint<double> ckpt;
  LinearWarmup<CosineDecay<double>> schedule{2, CosineDecay<double>(0.05, 8, 0.1)};

  explicit ResumableRun(Opt optimizer, std::uint64_t seed) : opt(std::move(optimizer)) {
    Rng rng(seed);
    lstm.reset_parameters(rng);
    dense.reset_parameters(rng);
    ckpt.add("lstm", lstm).add("dense", dense).add("opt", opt);
  }

  double step(std::int64_t step) {
    constexpr Index T = 4, B = 6;
    Rng rng(1000 + std::uint64_t(step));
    const Tensor3<double> x = random_tensor<double>(T, B, 3, rng);
    std::vector<int> lengths(B), labels(B);
    for (Index b = 0; b < B; ++b) {
      lengths[b] = int(uniform_int(rng, 1, T + 1));
      labels[b] = int(uniform_int(rng, 0, 3));
    }
    set_learning_rate(opt, schedule, step);
    const auto fwd = dynamic_rnn(lstm, x, lengths);
    const auto last = gather_last_outputs(fwd.outputs, lengths);
    const auto ce = softmax_cross_entropy(dense.forward(last), labels);
    auto d_dense = dense.make_gradients();
    const auto d_last = dense.backward(last, ce.d_logits, d_dense);
    auto d_lstm = dynamic_rnn_backward(lstm, fwd, gather_last_outputs_backward(d_last, lengths, T));
    clip_by_global_norm(0.05, d_lstm, d_dense);
    opt.apply(lstm, d_lstm);
    opt.apply(dense, d_dense);
    return ce.loss;
  }
};

template <class Opt>
void expect_resume_is_exact(const std::function<Opt()>& make) {
  constexpr std::int64_t steps = 8, stop = 3;
  ResumableRun<Opt> whole(make(), 1);
  std::vector<double> expected;
  for (std::int64_t s = 0; s < steps; ++s) expected.push_back(whole.step(s));

  ResumableRun<Opt> first(make(), 1);
  for (std::int64_t s = 0; s < stop; ++s) EXPECT_EQ(first.step(s), expected[std::size_t(s)]);
  const auto bytes = first.ckpt.to_bytes(stop);
  ResumableRun<Opt> resumed(make(), 2);  // other weights, fresh optimiser: all from the file
  const std::int64_t start = resumed.ckpt.load(safetensors::File::parse(bytes, "resume"));
  ASSERT_EQ(start, stop);
  for (std::int64_t s = start; s < steps; ++s) EXPECT_EQ(resumed.step(s), expected[std::size_t(s)]) << "step " << s;
  EXPECT_EQ(resumed.ckpt.to_bytes(steps), whole.ckpt.to_bytes(steps));
}

TEST(Checkpoint, ResumeIsExactForEveryOptimizerWithScheduleAndClipping) {
  expect_resume_is_exact<Adam<double>>([] {
    AdamOptions<double> o;
    o.amsgrad = true;
    return Adam<double>(o);
  });
  expect_resume_is_exact<Adam<double>>([] { return Adam<double>(AdamOptions<double>::tensorflow()); });
  expect_resume_is_exact<AdamW<double>>([] { return AdamW<double>(0.01, 0.1); });
  expect_resume_is_exact<SGD<double>>([] {
    SGDOptions<double> o;
    o.momentum = 0.9;
    o.nesterov = true;
    return SGD<double>(o);
  });
  expect_resume_is_exact<Adagrad<double>>([] {
    AdagradOptions<double> o;
    o.lr_decay = 0.1;
    return Adagrad<double>(o);
  });
  expect_resume_is_exact<RMSProp<double>>([] {
    auto o = RMSPropOptions<double>::tensorflow(0.01);
    o.momentum = 0.5;
    return RMSProp<double>(o);
  });
}

TEST(Checkpoint, StoresEachOptimizersSlotsAndUpdateCounts) {
  ResumableRun<Adam<double>> run([] {
    AdamOptions<double> o;
    o.amsgrad = true;
    return Adam<double>(o);
  }(), 1);
  run.step(0);
  run.step(1);
  const auto f = safetensors::File::parse(run.ckpt.to_bytes(2), "adam");
  for (const char* slot : {"m", "v", "vmax"}) EXPECT_EQ(f.tensors().count(std::string("opt/lstm/kernel/") + slot), 1u) << slot;
  EXPECT_EQ(f.metadata().at("dynrnn.updates.opt/lstm/kernel"), "2");
  // A file whose update count is missing is refused, and the model is left unchanged.
  auto bytes = run.ckpt.to_bytes(2);
  const std::string key = "dynrnn.updates.opt/dense/bias";
  const auto at = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  ASSERT_NE(at, bytes.end());
  *(at + 8) = 'X';  // "dynrnn.uXdates...": the expected key is gone
  AdamOptions<double> o;
  o.amsgrad = true;
  ResumableRun<Adam<double>> other{Adam<double>(o), 2};
  const Matrix<double> kernel = other.lstm.kernel();
  EXPECT_NE(checkpoint_error([&] { other.ckpt.load(safetensors::File::parse(bytes, "damaged")); })
                .find("metadata '" + key + "' is missing"),
            std::string::npos);
  EXPECT_EQ(other.lstm.kernel(), kernel);
  EXPECT_EQ(other.opt.slot_count(), 0u);
}

}  // namespace
}  // namespace dynrnn::test
