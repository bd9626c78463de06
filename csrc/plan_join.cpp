// join_plan: the Python-object half of a reused NB201 build (zico_fast/spaces/nb201_reuse.py) in
// one call: pick each cell's ops from its table and concatenate every part's plan columns.
//
// NOTE: [Why the join is native]
// A candidate's build touches ~1,000 Python objects (the parts' column tuples, the modules, the
// tensors and plan entries they hold), and after the candidate before it ran its passes most of
// them are in memory, not in the caches. Python's join loads them one after another, each load
// waiting for the one before, ~0.2 ms per candidate. This walks the same objects in waves: each
// wave first issues a prefetch for every object the next wave reads, so their cache misses
// overlap instead of queueing. It reads nothing but tuples and lists and writes nothing but
// reference counts and the new lists, and the result is what the Python join returned
// (tests/test_nb201_reuse.py compares the two).
#include <Python.h>

#include <vector>

namespace zico_fast {
namespace {

inline void prefetch_read(const void* p) { __builtin_prefetch(p, 0); }
inline void prefetch_write(const void* p) { __builtin_prefetch(p, 1); }  // reference counts get written

PyObject* fail(const char* message) {
  PyErr_SetString(PyExc_TypeError, message);
  return nullptr;
}

// join_plan(walk, slots, used) -> (columns, cell_ops) or None
//   walk:  list, in the network's module-walk order, of a fixed part's columns (a tuple of tuples)
//          or a cell's op table (a list: slot -> (op module, its part's columns), or None when not
//          built yet)
//   slots: tuple of ints, the table slot of each of a cell's edges (the same for every cell)
//   used:  how many leading columns to join (each part has at least that many)
// columns: `used` lists, column c the concatenation of every part's column c in walk order, a
// cell's chosen ops' parts in slot order; cell_ops: per cell, the tuple of its chosen op modules.
// None: some chosen slot is not built yet (build it, then call again).
PyObject* join_plan(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 3 || !PyList_Check(args[0]) || !PyTuple_Check(args[1]) || !PyLong_Check(args[2])) {
    return fail("join_plan(walk: list, slots: tuple, used: int)");
  }
  PyObject* walk = args[0];
  PyObject* slots = args[1];
  const Py_ssize_t used = PyLong_AsSsize_t(args[2]);
  if (used < 0) return fail("join_plan: used must be >= 0");
  const Py_ssize_t pieces = PyList_GET_SIZE(walk);
  std::vector<Py_ssize_t> slot(PyTuple_GET_SIZE(slots));
  for (size_t e = 0; e < slot.size(); ++e) {
    slot[e] = PyLong_AsSsize_t(PyTuple_GET_ITEM(slots, e));
    if (slot[e] < 0) return PyErr_Occurred() ? nullptr : fail("join_plan: slots must be >= 0");
  }

  // Wave 1: the pieces themselves.
  for (Py_ssize_t i = 0; i < pieces; ++i) prefetch_read(PyList_GET_ITEM(walk, i));
  // Wave 2: a table's item array (where the chosen entries' pointers sit), a part's columns.
  for (Py_ssize_t i = 0; i < pieces; ++i) {
    PyObject* piece = PyList_GET_ITEM(walk, i);
    if (PyList_Check(piece)) {
      for (Py_ssize_t s : slot) {
        if (s >= PyList_GET_SIZE(piece)) return fail("join_plan: a slot past a cell's table");
        prefetch_read(&PyList_GET_ITEM(piece, s));
      }
    } else if (PyTuple_Check(piece)) {
      for (Py_ssize_t c = 0; c < used && c < PyTuple_GET_SIZE(piece); ++c) prefetch_read(PyTuple_GET_ITEM(piece, c));
    } else {
      return fail("join_plan: walk items must be tuples (parts) or lists (cell tables)");
    }
  }
  // Wave 3: the chosen entries.
  for (Py_ssize_t i = 0; i < pieces; ++i) {
    PyObject* piece = PyList_GET_ITEM(walk, i);
    if (!PyList_Check(piece)) continue;
    for (Py_ssize_t s : slot) {
      PyObject* entry = PyList_GET_ITEM(piece, s);
      if (entry == Py_None) Py_RETURN_NONE;
      prefetch_read(entry);
    }
  }
  // Wave 4: the chosen modules and their parts' columns; every part, in walk order.
  std::vector<PyObject*> parts, modules;
  parts.reserve(pieces * (slot.size() + 1));
  Py_ssize_t cells = 0;
  for (Py_ssize_t i = 0; i < pieces; ++i) {
    PyObject* piece = PyList_GET_ITEM(walk, i);
    if (PyTuple_Check(piece)) {
      parts.push_back(piece);
      continue;
    }
    ++cells;
    for (Py_ssize_t s : slot) {
      PyObject* entry = PyList_GET_ITEM(piece, s);
      if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(entry, 1))) {
        return fail("join_plan: a table entry must be (module, columns tuple)");
      }
      prefetch_write(PyTuple_GET_ITEM(entry, 0));
      modules.push_back(PyTuple_GET_ITEM(entry, 0));
      PyObject* columns = PyTuple_GET_ITEM(entry, 1);
      prefetch_read(columns);
      parts.push_back(columns);
    }
  }
  // Wave 5: the op parts' column tuples (the fixed parts' are on their way since wave 2).
  for (PyObject* part : parts) {
    if (PyTuple_GET_SIZE(part) < used) return fail("join_plan: a part has fewer columns than `used`");
    for (Py_ssize_t c = 0; c < used; ++c) prefetch_read(PyTuple_GET_ITEM(part, c));
  }
  // Wave 6: every item the lists will hold (their reference counts are written below).
  std::vector<Py_ssize_t> lengths(used, 0);
  for (PyObject* part : parts) {
    for (Py_ssize_t c = 0; c < used; ++c) {
      PyObject* column = PyTuple_GET_ITEM(part, c);
      if (!PyTuple_Check(column)) return fail("join_plan: a part's columns must be tuples");
      lengths[c] += PyTuple_GET_SIZE(column);
      for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(column); ++j) prefetch_write(PyTuple_GET_ITEM(column, j));
    }
  }
  // The results.
  PyObject* columns = PyList_New(used);
  PyObject* cell_ops = PyList_New(cells);
  PyObject* result = columns && cell_ops ? PyTuple_Pack(2, columns, cell_ops) : nullptr;
  Py_XDECREF(columns);
  Py_XDECREF(cell_ops);
  if (result == nullptr) return nullptr;
  for (Py_ssize_t c = 0; c < used; ++c) {
    PyObject* joined = PyList_New(lengths[c]);
    if (joined == nullptr) {
      Py_DECREF(result);
      return nullptr;
    }
    Py_ssize_t k = 0;
    for (PyObject* part : parts) {
      PyObject* column = PyTuple_GET_ITEM(part, c);
      for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(column); ++j) {
        PyObject* item = PyTuple_GET_ITEM(column, j);
        Py_INCREF(item);
        PyList_SET_ITEM(joined, k++, item);
      }
    }
    PyList_SET_ITEM(columns, c, joined);
  }
  for (Py_ssize_t cell = 0; cell < cells; ++cell) {
    PyObject* ops = PyTuple_New(static_cast<Py_ssize_t>(slot.size()));
    if (ops == nullptr) {
      Py_DECREF(result);
      return nullptr;
    }
    for (size_t e = 0; e < slot.size(); ++e) {
      PyObject* module = modules[cell * slot.size() + e];
      Py_INCREF(module);
      PyTuple_SET_ITEM(ops, static_cast<Py_ssize_t>(e), module);
    }
    PyList_SET_ITEM(cell_ops, cell, ops);
  }
  return result;
}

PyMethodDef methods[] = {
    {"join_plan", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(join_plan)), METH_FASTCALL,
     "join_plan(walk, slots, used) -> (columns, cell_ops) or None: see csrc/plan_join.cpp"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMethodDef* plan_join_methods() { return methods; }

}  // namespace zico_fast
