// modelmeter's native op recorder: the capture of a real-tensor inference run, without a Python call per op.
//
// A thread-local RecordFunction callback (the hook PyTorch's profiler uses) sees every dispatcher call of
// the thread that started it. It records the ops a TorchDispatchMode would see: an op whose kernel is
// not CompositeImplicitAutograd, called outside any other recorded op (a CompositeImplicitAutograd op,
// e.g. conv2d or linear, runs its decomposition above the Python key; the mode sees the ops it calls).
// While a recorded op runs, RecordFunction is switched off for this thread, so the ops its kernel calls
// pay nothing. For each recorded op the arguments are kept as the mode would receive them (trailing
// defaulted positional arguments dropped, keyword-only ones as keywords unless defaulted) with every
// tensor replaced by its metadata, taken after the op ran (as the mode takes it). No tensor is held
// past its op. Python objects are built only in drain(), after the run, with the GIL held (ops may run
// with the GIL released).
//
// Built on first use by modelmeter/capture/native/__init__.py against the installed torch.

#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/record_function.h>

#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

enum Kind : int8_t { K_OTHER = 0, K_DTYPE = 1, K_LAYOUT = 2, K_MEMFMT = 3 };

struct OpInfo {
  bool visible = false;
  int id = -1;
  const c10::FunctionSchema* schema = nullptr;
  std::vector<int8_t> kinds;
  size_t kwarg_only_start = 0;
  OpInfo* as_view = nullptr;  // aten::_reshape_alias: recorded as aten::view (see view_info())
  // aten::detach_: its autograd kernel does the work and never calls down to the kernels below
  // autograd, where a dispatch mode sits; a mode sees it only for a tensor without autograd keys
  bool autograd_only = false;
};

struct Meta {
  std::vector<int64_t> shape;
  int16_t dtype = 0;
  int16_t device_type = 0;
  bool requires_grad = false;
  intptr_t storage = 0;
  int64_t storage_nbytes = 0;
  int64_t numel = 0;
  int64_t nbytes = 0;
};

// One argument or return value, without tensors: a tensor's metadata, a list, or a plain IValue.
struct Val {
  int8_t kind = 0;  // 0 plain IValue (converted in drain), 1 tensor, 2 list, 3 None
  int8_t arg_kind = K_OTHER;
  int32_t meta = -1;
  c10::IValue iv;
  std::vector<Val> items;
};

struct Rec {
  int op = -1;
  int module = 0;
  size_t npos = 0;                  // positional arguments passed (trailing defaults dropped)
  std::vector<int> kwargs;          // schema indices of keyword-only arguments passed
  std::vector<Val> args;            // every schema argument
  std::vector<Val> outs;            // every return
  std::vector<Meta> metas;
  bool unsupported = false;
};

struct State {
  bool active = false;
  int paused = 0;
  bool rf_was_enabled = true;
  unsigned long owner = 0;
  std::vector<int> modules{0};
  std::vector<Rec> recs;
  std::vector<OpInfo*> ops;  // by id
  std::unordered_map<const char*, std::unique_ptr<OpInfo>> infos;
  at::CallbackHandle handle = 0;
  std::string error;
};

State S;

// Python objects handed over by configure()
PyObject* g_dtypes = nullptr;        // list: ScalarType value -> torch.dtype
PyObject* g_layouts = nullptr;       // list: Layout value -> torch.layout
PyObject* g_memfmts = nullptr;       // list: MemoryFormat value -> torch.memory_format
PyObject* g_device = nullptr;        // torch.device
PyTypeObject* g_size = nullptr;      // torch.Size
PyTypeObject* g_meta = nullptr;      // modelmeter's TensorMeta (a tuple subclass)
PyTypeObject* g_event = nullptr;     // modelmeter's OpEvent
std::unordered_map<int, PyObject*> g_device_names;

Kind kind_of(const c10::Argument& a) {
  auto t = a.real_type();
  if (auto opt = t->cast<c10::OptionalType>()) t = opt->getElementType();
  switch (t->kind()) {
    case c10::TypeKind::ScalarTypeType: return K_DTYPE;
    case c10::TypeKind::LayoutType: return K_LAYOUT;
    case c10::TypeKind::MemoryFormatType: return K_MEMFMT;
    default: return K_OTHER;
  }
}

OpInfo* info_of_handle(const char* key, const std::optional<c10::OperatorHandle>& handle);

// Under a dispatch mode PyTorch's reshape makes a view with aten::view; without one, with
// aten::_reshape_alias (at::native::reshape takes the view path for "tensor-subclass-like" inputs, and
// an active dispatch mode makes every input one). The same view of the same size: recorded as the
// aten::view a mode sees, so that the native and Python captures (and meta runs) agree.
OpInfo* view_info() {
  static OpInfo* info = nullptr;
  if (info == nullptr) {
    auto handle = c10::Dispatcher::singleton().findOp(c10::OperatorName("aten::view", ""));
    if (handle && handle->hasSchema()) info = info_of_handle(handle->schema().name().c_str(), handle);
  }
  return info;
}

OpInfo* info_of_handle(const char* key, const std::optional<c10::OperatorHandle>& handle) {
  auto it = S.infos.find(key);
  if (it != S.infos.end()) return it->second.get();
  auto info = std::make_unique<OpInfo>();
  if (handle && handle->hasSchema()) {
    info->visible = !handle->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd);
    info->schema = &handle->schema();
    const auto& args = info->schema->arguments();
    info->kinds.reserve(args.size());
    for (const auto& a : args) info->kinds.push_back(kind_of(a));
    size_t k = args.size();
    while (k > 0 && args[k - 1].kwarg_only()) k--;
    info->kwarg_only_start = k;
  }
  OpInfo* out = info.get();
  S.infos.emplace(key, std::move(info));
  if (out->visible) {
    out->id = static_cast<int>(S.ops.size());
    S.ops.push_back(out);
    const auto& name = out->schema->operator_name();
    if (name.name == "aten::_reshape_alias" && name.overload_name.empty()) out->as_view = view_info();
    if (name.name == "aten::detach_" && name.overload_name.empty()) out->autograd_only = true;
  }
  return out;
}

OpInfo* info_of(const at::RecordFunction& fn) {
  const char* key = fn.name();
  auto it = S.infos.find(key);
  if (it != S.infos.end()) return it->second.get();
  auto name = fn.operator_name();
  std::optional<c10::OperatorHandle> handle;
  if (name) handle = c10::Dispatcher::singleton().findOp(*name);
  return info_of_handle(key, handle);
}

// the TensorImpls of an op's tensor arguments, while its outputs are described (see describe())
thread_local std::vector<const c10::TensorImpl*> t_inputs;
thread_local bool t_describing_outputs = false;

// A Python number passed where an op takes a tensor (x + 1) is a 0-dim "wrapped number" tensor; a
// dispatch mode receives it as the number. Its value, read from its memory (no op is dispatched).
bool wrapped_number(const at::Tensor& t, Val& v) {
  if (!t.unsafeGetTensorImpl()->is_wrapped_number() || !t.is_cpu() || !t.has_storage()) return false;
  const void* p = t.const_data_ptr();
  switch (t.scalar_type()) {
    case c10::ScalarType::Long: v.iv = c10::IValue(*static_cast<const int64_t*>(p)); break;
    case c10::ScalarType::Int: v.iv = c10::IValue(static_cast<int64_t>(*static_cast<const int32_t*>(p))); break;
    case c10::ScalarType::Double: v.iv = c10::IValue(*static_cast<const double*>(p)); break;
    case c10::ScalarType::Float: v.iv = c10::IValue(static_cast<double>(*static_cast<const float*>(p))); break;
    case c10::ScalarType::Bool: v.iv = c10::IValue(*static_cast<const bool*>(p)); break;
    case c10::ScalarType::ComplexDouble: v.iv = c10::IValue(*static_cast<const c10::complex<double>*>(p)); break;
    default: return false;
  }
  v.kind = 0;
  return true;
}

void describe(Rec& rec, const at::Tensor& t, Val& v) {
  if (!t.defined()) {
    v.kind = 3;
    return;
  }
  if (wrapped_number(t, v)) return;
  // sparse and other storage-less layouts, tensor subclasses, functorch wrappers, lazy conjugate or
  // negative views (materialized by keys above the one a dispatch mode sees): the Python capture's
  static const c10::DispatchKeySet special({c10::DispatchKey::Python, c10::DispatchKey::FuncTorchBatched,
                                            c10::DispatchKey::FuncTorchGradWrapper, c10::DispatchKey::Functionalize,
                                            c10::DispatchKey::Conjugate, c10::DispatchKey::Negative,
                                            c10::DispatchKey::ZeroTensor, c10::DispatchKey::NestedTensor});
  if (!t.has_storage() || t.key_set().has_any(special)) {
    rec.unsupported = true;
    v.kind = 3;
    return;
  }
  Meta m;
  auto sizes = t.sizes();
  m.shape.assign(sizes.begin(), sizes.end());
  m.dtype = static_cast<int16_t>(t.scalar_type());
  m.device_type = static_cast<int16_t>(t.device().type());
  // A dispatch mode sees an op's outputs below autograd, before a view or a new tensor is given its
  // autograd metadata: they do not require grad, unless the output is one of the op's own arguments.
  if (t_describing_outputs) {
    const c10::TensorImpl* impl = t.unsafeGetTensorImpl();
    bool argument = false;
    for (const auto* p : t_inputs) argument = argument || p == impl;
    m.requires_grad = argument && t.requires_grad();
  } else {
    m.requires_grad = t.requires_grad();
  }
  const auto& storage = t.storage();
  m.storage = reinterpret_cast<intptr_t>(storage.unsafeGetStorageImpl());
  m.storage_nbytes = static_cast<int64_t>(storage.nbytes());
  m.numel = t.numel();
  m.nbytes = m.numel * static_cast<int64_t>(t.dtype().itemsize());
  v.kind = 1;
  v.meta = static_cast<int32_t>(rec.metas.size());
  rec.metas.push_back(std::move(m));
}

void convert(Rec& rec, const c10::IValue& iv, Val& v) {
  if (iv.isTensor()) {
    describe(rec, iv.toTensor(), v);
  } else if (iv.isNone()) {
    v.kind = 3;
  } else if (iv.isTensorList()) {
    v.kind = 2;
    auto list = iv.toTensorList();
    v.items.resize(list.size());
    for (size_t i = 0; i < list.size(); i++) describe(rec, list.get(i), v.items[i]);
  } else if (iv.isList()) {
    auto list = iv.toListRef();
    bool tensors = false;
    for (const auto& x : list) tensors = tensors || x.isTensor();
    if (!tensors) {  // int/float/bool lists, or a list of optional tensors that are all None
      bool none_only = !list.empty();
      for (const auto& x : list) none_only = none_only && x.isNone();
      if (none_only) {
        v.kind = 2;
        v.items.resize(list.size());
        for (auto& item : v.items) item.kind = 3;
      } else {
        v.kind = 0;
        v.iv = iv;
      }
      return;
    }
    v.kind = 2;
    v.items.resize(list.size());
    for (size_t i = 0; i < list.size(); i++) convert(rec, list[i], v.items[i]);
  } else if (iv.isInt() || iv.isDouble() || iv.isBool() || iv.isString() || iv.isIntList() ||
             iv.isDoubleList() || iv.isBoolList() || iv.isDevice() || iv.isComplexDouble()) {
    v.kind = 0;
    v.iv = iv;
  } else if (iv.isGenerator()) {
    v.kind = 3;  // a random generator: no cost rule reads it
  } else {
    rec.unsupported = true;
    v.kind = 3;
  }
}

struct Ctx : at::ObserverContext {
  size_t index = 0;
  std::vector<c10::IValue> inputs;  // held while the op runs: their metadata is taken after it
};

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  if (S.paused) return nullptr;
  // a call PyTorch makes with the Python key excluded (torch.tensor's own empty and copy) is one a
  // dispatch mode never sees
  if (c10::impl::tls_is_dispatch_key_excluded(c10::DispatchKey::Python)) return nullptr;
  OpInfo* info = info_of(fn);
  if (!info->visible) return nullptr;
  if (info->as_view != nullptr) info = info->as_view;
  if (info->autograd_only) {
    auto inputs = fn.inputs();
    if (!inputs.empty() && inputs[0].isTensor() &&
        inputs[0].toTensor().key_set().has_any(c10::autograd_dispatch_keyset) &&
        !c10::impl::tls_local_dispatch_key_set().excluded_.has_any(c10::autograd_dispatch_keyset))
      return nullptr;
  }
  auto ctx = std::make_unique<Ctx>();
  auto inputs = fn.inputs();
  ctx->inputs.assign(inputs.begin(), inputs.end());
  ctx->index = S.recs.size();
  Rec& rec = S.recs.emplace_back();
  rec.op = info->id;
  rec.module = S.modules.back();
  // the kernel's own calls are not the mode's to see: RecordFunction off until this op returns
  at::enableRecordFunction(false);
  return ctx;
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext* ctx_) {
  if (ctx_ == nullptr) return;
  at::enableRecordFunction(true);
  auto* ctx = static_cast<Ctx*>(ctx_);
  Rec& rec = S.recs[ctx->index];
  const OpInfo* info = S.ops[rec.op];
  const auto& schema_args = info->schema->arguments();
  auto& in = ctx->inputs;
  // (for _reshape_alias recorded as view: its self and size, not its stride)
  size_t n = std::min(in.size(), schema_args.size());
  auto is_default = [&](size_t i) {
    const auto& d = schema_args[i].default_value();
    return d.has_value() && *d == in[i];
  };
  size_t kw = std::min(info->kwarg_only_start, n);
  size_t npos = kw;
  while (npos > 0 && is_default(npos - 1)) npos--;
  rec.npos = npos;
  for (size_t i = kw; i < n; i++)
    if (!is_default(i)) rec.kwargs.push_back(static_cast<int>(i));
  rec.args.resize(n);
  for (size_t i = 0; i < n; i++) {
    if (i >= npos && i < kw) continue;  // dropped: a trailing default
    rec.args[i].arg_kind = info->kinds[i];
    convert(rec, in[i], rec.args[i]);
  }
  t_inputs.clear();
  for (const auto& x : in) {
    if (x.isTensor()) {
      t_inputs.push_back(x.toTensor().unsafeGetTensorImpl());
    } else if (x.isTensorList()) {
      for (const auto& t : x.toTensorList()) t_inputs.push_back(static_cast<at::Tensor>(t).unsafeGetTensorImpl());
    }
  }
  const auto& outs = fn.outputs();
  rec.outs.resize(outs.size());
  t_describing_outputs = true;
  for (size_t i = 0; i < outs.size(); i++) convert(rec, outs[i], rec.outs[i]);
  t_describing_outputs = false;
  t_inputs.clear();
  in.clear();
}

// ---- Python side ----------------------------------------------------------------------------------

PyObject* to_py_plain(const c10::IValue& iv, int8_t arg_kind) {
  if (iv.isInt()) {
    int64_t x = iv.toInt();
    PyObject* table = arg_kind == K_DTYPE ? g_dtypes : arg_kind == K_LAYOUT ? g_layouts
                    : arg_kind == K_MEMFMT ? g_memfmts : nullptr;
    if (table != nullptr && x >= 0 && x < PyList_GET_SIZE(table)) {
      PyObject* o = PyList_GET_ITEM(table, x);
      if (o != Py_None) {
        Py_INCREF(o);
        return o;
      }
    }
    return PyLong_FromLongLong(x);
  }
  if (iv.isBool()) return PyBool_FromLong(iv.toBool());
  if (iv.isDouble()) return PyFloat_FromDouble(iv.toDouble());
  if (iv.isComplexDouble()) {
    auto c = iv.toComplexDouble();
    return PyComplex_FromDoubles(c.real(), c.imag());
  }
  if (iv.isString()) return PyUnicode_FromString(iv.toStringRef().c_str());
  if (iv.isDevice()) return PyObject_CallFunction(g_device, "s", iv.toDevice().str().c_str());
  if (iv.isIntList()) {
    auto l = iv.toIntVector();
    PyObject* out = PyList_New(static_cast<Py_ssize_t>(l.size()));
    for (size_t i = 0; i < l.size(); i++) PyList_SET_ITEM(out, i, PyLong_FromLongLong(l[i]));
    return out;
  }
  if (iv.isDoubleList()) {
    auto l = iv.toDoubleVector();
    PyObject* out = PyList_New(static_cast<Py_ssize_t>(l.size()));
    for (size_t i = 0; i < l.size(); i++) PyList_SET_ITEM(out, i, PyFloat_FromDouble(l[i]));
    return out;
  }
  if (iv.isBoolList()) {
    auto l = iv.toBoolList();
    PyObject* out = PyList_New(static_cast<Py_ssize_t>(l.size()));
    for (size_t i = 0; i < l.size(); i++) PyList_SET_ITEM(out, i, PyBool_FromLong(l.get(i)));
    return out;
  }
  Py_RETURN_NONE;
}

PyObject* device_name(int16_t type) {
  auto it = g_device_names.find(type);
  if (it != g_device_names.end()) return it->second;
  std::string s = c10::DeviceTypeName(static_cast<c10::DeviceType>(type), /*lower_case=*/true);
  PyObject* o = PyUnicode_InternFromString(s.c_str());
  g_device_names.emplace(type, o);
  return o;
}

// A TensorMeta: (shape, dtype, device, storage_key, storage_nbytes, requires_grad, numel, nbytes)
PyObject* meta_to_py(const Meta& m) {
  PyObject* shape = g_size->tp_alloc(g_size, static_cast<Py_ssize_t>(m.shape.size()));
  if (shape == nullptr) return nullptr;
  for (size_t i = 0; i < m.shape.size(); i++) PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong(m.shape[i]));
  PyObject* t = g_meta->tp_alloc(g_meta, 8);
  if (t == nullptr) {
    Py_DECREF(shape);
    return nullptr;
  }
  PyObject* dtype = (m.dtype >= 0 && m.dtype < PyList_GET_SIZE(g_dtypes)) ? PyList_GET_ITEM(g_dtypes, m.dtype) : Py_None;
  Py_INCREF(dtype);
  PyObject* dev = device_name(m.device_type);
  Py_INCREF(dev);
  PyTuple_SET_ITEM(t, 0, shape);
  PyTuple_SET_ITEM(t, 1, dtype);
  PyTuple_SET_ITEM(t, 2, dev);
  PyTuple_SET_ITEM(t, 3, PyLong_FromSsize_t(m.storage));
  PyTuple_SET_ITEM(t, 4, PyLong_FromLongLong(m.storage_nbytes));
  PyTuple_SET_ITEM(t, 5, PyBool_FromLong(m.requires_grad));
  PyTuple_SET_ITEM(t, 6, PyLong_FromLongLong(m.numel));
  PyTuple_SET_ITEM(t, 7, PyLong_FromLongLong(m.nbytes));
  return t;
}

// A value as the mode receives it; every tensor's TensorMeta is appended to `found` when it is given.
PyObject* val_to_py(const Val& v, const std::vector<PyObject*>& metas, PyObject* found) {
  switch (v.kind) {
    case 1: {
      PyObject* m = metas[v.meta];
      if (found != nullptr) PyList_Append(found, m);
      Py_INCREF(m);
      return m;
    }
    case 2: {
      PyObject* out = PyList_New(static_cast<Py_ssize_t>(v.items.size()));
      for (size_t i = 0; i < v.items.size(); i++) PyList_SET_ITEM(out, i, val_to_py(v.items[i], metas, found));
      return out;
    }
    case 3:
      Py_RETURN_NONE;
    default:
      return to_py_plain(v.iv, v.arg_kind);
  }
}

PyObject* py_configure(PyObject*, PyObject* args) {
  PyObject *dtypes, *layouts, *memfmts, *device, *size, *meta, *event;
  if (!PyArg_ParseTuple(args, "O!O!O!OOOO", &PyList_Type, &dtypes, &PyList_Type, &layouts, &PyList_Type, &memfmts,
                        &device, &size, &meta, &event))
    return nullptr;
  Py_INCREF(event);
  g_event = reinterpret_cast<PyTypeObject*>(event);
  Py_XDECREF(g_dtypes);
  Py_XDECREF(g_layouts);
  Py_XDECREF(g_memfmts);
  Py_XDECREF(g_device);
  Py_INCREF(dtypes);
  Py_INCREF(layouts);
  Py_INCREF(memfmts);
  Py_INCREF(device);
  Py_INCREF(size);
  Py_INCREF(meta);
  g_dtypes = dtypes;
  g_layouts = layouts;
  g_memfmts = memfmts;
  g_device = device;
  g_size = reinterpret_cast<PyTypeObject*>(size);
  g_meta = reinterpret_cast<PyTypeObject*>(meta);
  Py_RETURN_NONE;
}

// start(): True when recording began; False when another RecordFunction user is active on this
// process (a profiler): switching RecordFunction off inside ops would hide ops from it.
PyObject* py_start(PyObject*, PyObject*) {
  if (S.active) Py_RETURN_FALSE;
  if (g_meta == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "configure() was not called");
    return nullptr;
  }
  if (at::hasCallbacks() || !at::isRecordFunctionEnabled()) Py_RETURN_FALSE;
  S.recs.clear();
  S.paused = 0;
  S.modules.assign(1, 0);
  S.owner = PyThread_get_thread_ident();
  S.handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_enter, on_exit).needsInputs(true).needsOutputs(true).scopes(
          {at::RecordScope::FUNCTION}));
  S.active = true;
  Py_RETURN_TRUE;
}

PyObject* py_stop(PyObject*, PyObject*) {
  if (S.active) {
    at::removeCallback(S.handle);
    at::enableRecordFunction(true);
    S.active = false;
  }
  Py_RETURN_NONE;
}

// push(id): a module's forward begins; -1: one that is not a submodule of the model (its ops stay with the caller)
PyObject* py_push(PyObject*, PyObject* arg) {
  if (S.active && PyThread_get_thread_ident() == S.owner) {
    int id = static_cast<int>(PyLong_AsLong(arg));
    S.modules.push_back(id < 0 ? S.modules.back() : id);
  }
  Py_RETURN_NONE;
}

PyObject* py_pop(PyObject*, PyObject*) {
  if (S.active && PyThread_get_thread_ident() == S.owner && S.modules.size() > 1) S.modules.pop_back();
  Py_RETURN_NONE;
}

PyObject* py_pause(PyObject*, PyObject*) {
  S.paused++;
  Py_RETURN_NONE;
}

PyObject* py_resume(PyObject*, PyObject*) {
  if (S.paused > 0) S.paused--;
  Py_RETURN_NONE;
}

// the names of c10's Layout and MemoryFormat values, in enum order
PyObject* py_enum_names(PyObject*, PyObject*) {
  const int nl = static_cast<int>(c10::Layout::NumOptions);
  const int nm = static_cast<int>(c10::MemoryFormat::NumOptions);
  PyObject* layouts = PyList_New(nl);
  for (int i = 0; i < nl; i++) {
    std::ostringstream os;
    os << static_cast<c10::Layout>(i);
    PyList_SET_ITEM(layouts, i, PyUnicode_FromString(os.str().c_str()));
  }
  PyObject* memfmts = PyList_New(nm);
  for (int i = 0; i < nm; i++) {
    std::ostringstream os;
    os << static_cast<c10::MemoryFormat>(i);
    PyList_SET_ITEM(memfmts, i, PyUnicode_FromString(os.str().c_str()));
  }
  return Py_BuildValue("(NN)", layouts, memfmts);
}

PyObject* py_clear(PyObject*, PyObject*) {
  S.recs.clear();
  Py_RETURN_NONE;
}

PyObject* py_position(PyObject*, PyObject*) { return PyLong_FromSize_t(S.recs.size()); }

// the op table: id -> (name, overload name)
PyObject* py_ops(PyObject*, PyObject*) {
  PyObject* out = PyList_New(static_cast<Py_ssize_t>(S.ops.size()));
  for (size_t i = 0; i < S.ops.size(); i++) {
    const auto& name = S.ops[i]->schema->operator_name();
    PyList_SET_ITEM(out, i, Py_BuildValue("(ss)", name.name.c_str(), name.overload_name.c_str()));
  }
  return out;
}

// drain(plans, paths): every record made an OpEvent, as the Python capture's record_op makes it; the
// recorder is emptied. plans[op id] = (name, OpOverload, is_view, fresh, lifts); paths[module id] = path.
// Returns None (and forgets the records) when a record holds a value described only in Python.
PyObject* py_drain(PyObject*, PyObject* args) {
  PyObject *plans, *paths;
  if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &plans, &PyList_Type, &paths)) return nullptr;
  bool unsupported = false;
  for (const auto& rec : S.recs) unsupported = unsupported || rec.unsupported;
  if (unsupported || g_event == nullptr) {
    S.recs.clear();
    Py_RETURN_NONE;
  }
  PyObject* out = PyList_New(static_cast<Py_ssize_t>(S.recs.size()));
  if (out == nullptr) return nullptr;
  // one TensorMeta per distinct description: an op's output is usually the next op's input
  std::unordered_map<std::string, PyObject*> cache;
  std::string key;
  auto meta_obj = [&](const Meta& m) -> PyObject* {
    key.assign(reinterpret_cast<const char*>(m.shape.data()), m.shape.size() * sizeof(int64_t));
    int64_t fields[6] = {m.dtype, m.device_type, m.requires_grad, m.storage, m.storage_nbytes,
                         static_cast<int64_t>(m.shape.size())};
    key.append(reinterpret_cast<const char*>(fields), sizeof(fields));
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    PyObject* o = meta_to_py(m);
    cache.emplace(key, o);
    return o;
  };
  PyObject* forward = PyUnicode_InternFromString("forward");
  PyObject* empty = PyTuple_New(0);
  bool failed = false;
  for (size_t r = 0; r < S.recs.size() && !failed; r++) {
    const Rec& rec = S.recs[r];
    PyObject* plan = PyList_GET_ITEM(plans, rec.op);
    std::vector<PyObject*> metas;
    metas.reserve(rec.metas.size());
    for (const auto& m : rec.metas) metas.push_back(meta_obj(m));
    const auto& schema_args = S.ops[rec.op]->schema->arguments();
    PyObject* inputs = PyList_New(0);
    PyObject* args_t = PyTuple_New(static_cast<Py_ssize_t>(rec.npos));
    for (size_t i = 0; i < rec.npos; i++) PyTuple_SET_ITEM(args_t, i, val_to_py(rec.args[i], metas, inputs));
    PyObject* kwargs = PyDict_New();
    for (int i : rec.kwargs) {
      bool is_out = schema_args[i].name() == "out";
      PyObject* v = val_to_py(rec.args[i], metas, is_out ? nullptr : inputs);
      PyDict_SetItemString(kwargs, schema_args[i].name().c_str(), v);
      Py_DECREF(v);
    }
    // outputs as the Python capture flattens them: a tensor; a list of tensors; a tuple of returns of
    // which at least one is a tensor, each tensor or list of tensors flattened
    PyObject* outputs = PyList_New(0);
    bool any = rec.outs.size() == 1;
    for (const auto& v : rec.outs) any = any || v.kind == 1;
    if (any)
      for (const auto& v : rec.outs) Py_DECREF(val_to_py(v, metas, outputs));
    // the storages the op allocated, by its schema (see tracer._State.record_op)
    bool fresh = PyObject_IsTrue(PyTuple_GET_ITEM(plan, 3));
    bool lifts = PyObject_IsTrue(PyTuple_GET_ITEM(plan, 4));
    PyObject* created = PyList_New(0);
    Py_ssize_t nout = PyList_GET_SIZE(outputs), nin = PyList_GET_SIZE(inputs);
    if (fresh || lifts) {
      std::vector<intptr_t> seen;
      if (fresh)
        for (Py_ssize_t i = 0; i < nin; i++) seen.push_back(PyLong_AsSsize_t(PyTuple_GET_ITEM(PyList_GET_ITEM(inputs, i), 3)));
      for (Py_ssize_t i = 0; i < nout; i++) {
        PyObject* t = PyList_GET_ITEM(outputs, i);
        intptr_t k = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 3));
        if (fresh) {
          bool dup = false;
          for (auto x : seen) dup = dup || x == k;
          if (dup) continue;
          seen.push_back(k);
        }
        PyObject* pair = PyTuple_Pack(2, PyTuple_GET_ITEM(t, 3), PyTuple_GET_ITEM(t, 4));
        PyList_Append(created, pair);
        Py_DECREF(pair);
      }
    }
    PyObject* path = PyList_GET_ITEM(paths, rec.module);
    PyObject* argv[12] = {PyLong_FromSize_t(r), PyTuple_GET_ITEM(plan, 0), path, forward, args_t, kwargs,
                          PyList_AsTuple(inputs), PyList_AsTuple(outputs), PyList_AsTuple(created), empty,
                          PyTuple_GET_ITEM(plan, 2), PyTuple_GET_ITEM(plan, 1)};
    PyObject* ev = PyObject_Vectorcall(reinterpret_cast<PyObject*>(g_event), argv, 12, nullptr);
    Py_DECREF(argv[0]);
    Py_DECREF(args_t);
    Py_DECREF(kwargs);
    Py_DECREF(argv[6]);
    Py_DECREF(argv[7]);
    Py_DECREF(argv[8]);
    Py_DECREF(inputs);
    Py_DECREF(outputs);
    Py_DECREF(created);
    if (ev == nullptr) {
      failed = true;
      break;
    }
    PyList_SET_ITEM(out, r, ev);
  }
  for (auto& kv : cache) Py_DECREF(kv.second);
  Py_DECREF(forward);
  Py_DECREF(empty);
  S.recs.clear();
  if (failed) {
    Py_DECREF(out);
    return nullptr;
  }
  return out;
}

PyMethodDef methods[] = {
    {"configure", py_configure, METH_VARARGS, "hand over torch's dtype/layout/memory-format tables, torch.device, torch.Size and TensorMeta"},
    {"start", py_start, METH_NOARGS, "start recording this thread's ops; False if another RecordFunction user is active"},
    {"stop", py_stop, METH_NOARGS, "stop recording"},
    {"push", py_push, METH_O, "enter a module (its id)"},
    {"pop", py_pop, METH_NOARGS, "leave the current module"},
    {"pause", py_pause, METH_NOARGS, "record nothing until resume() (an op recorded as one fused event)"},
    {"resume", py_resume, METH_NOARGS, "undo one pause()"},
    {"enum_names", py_enum_names, METH_NOARGS, "the names of c10's Layout and MemoryFormat values, in order"},
    {"clear", py_clear, METH_NOARGS, "forget every record"},
    {"position", py_position, METH_NOARGS, "the number of ops recorded so far"},
    {"ops", py_ops, METH_NOARGS, "the op table: id -> (name, overload name)"},
    {"drain", py_drain, METH_VARARGS, "the records as OpEvents (None if one needs the Python capture); the recorder is emptied"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_recorder", "modelmeter's native op recorder", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__recorder(void) { return PyModule_Create(&module_def); }
