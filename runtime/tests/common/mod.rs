//! Shared test helpers: a hand-assembled component of the `orchestrator` world whose `invoke`
//! behaviour is chosen by the first request byte, so traps, fuel exhaustion, memory exhaustion
//! and the import plumbing can be tested without the real logic.
#![allow(dead_code, clippy::unwrap_used)]

use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, DataSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    GlobalSection, GlobalType, ImportSection, InstructionSink, MemArg, MemorySection, MemoryType, Module, TypeSection,
    ValType,
};

/// The WIT world the runtime serves.
const WIT: &str = include_str!("../../../wit/orchestrator.wit");

/// First request byte: what the test component's `invoke` does. An empty request answers
/// `ok(<version>)`.
pub mod op {
    /// Executes `unreachable`.
    pub const TRAP: u8 = 1;
    /// Loops forever (runs out of fuel).
    pub const SPIN: u8 = 2;
    /// Grows its memory until that fails, then traps.
    pub const GROW: u8 = 3;
    /// `put("k", request)`, `emit(request)`, answers `ok(request)`.
    pub const PUT_EMIT_OK: u8 = 4;
    /// `put("k", request)`, `emit(request)`, answers `err(not-found, "nope")`.
    pub const PUT_EMIT_ERR: u8 = 5;
    /// `get("k")`: answers `ok(value)`, `ok(<version>)` when absent, or `err(internal, <state
    /// error message>)` when the state call fails.
    pub const GET: u8 = 6;
}

/// Methods the test component lists.
pub const RUN: &str = "test.Service/Run";
pub const QUERY: &str = "test.Service/Query";
/// A method only [`test_component_of`] lists, when asked to.
pub const EXTRA: &str = "test.Service/Extra";

/// The method table of [`test_component`]: `(name, read-only)`.
pub const METHODS: [(&str, bool); 2] = [(RUN, false), (QUERY, true)];

/// The WIT package version of the world the runtime serves.
pub const WORLD_VERSION: &str = "0.1.0";

// Memory layout of the test component.
const VERSION_AT: u32 = 16;
const RUN_AT: u32 = 64;
const QUERY_AT: u32 = 96;
const KEY_AT: u32 = 128;
const NOPE_AT: u32 = 136;
const EXTRA_AT: u32 = 160;
const METHODS_AT: u32 = 256;
const VERSION_RET: u32 = 512;
const METHODS_RET: u32 = 520;
const INVOKE_RET: u32 = 1024;
const IMPORT_RET: u32 = 1104;
const HEAP_START: i32 = 4096;

// Function indices: imports first.
const F_GET: u32 = 0;
const F_PUT: u32 = 1;
const F_EMIT: u32 = 2;

fn mem(offset: u64, align: u32) -> MemArg {
    MemArg { offset, align, memory_index: 0 }
}

/// `*(INVOKE_RET + offset) = value` for an i32 produced by `value`.
fn store_ret(f: &mut InstructionSink<'_>, offset: u64, value: impl FnOnce(&mut InstructionSink<'_>)) {
    f.i32_const(INVOKE_RET as i32);
    value(f);
    f.i32_store(mem(offset, 2));
}

/// `return ok(list at (ptr, len))`.
fn return_ok(
    f: &mut InstructionSink<'_>,
    ptr: impl FnOnce(&mut InstructionSink<'_>),
    len: impl FnOnce(&mut InstructionSink<'_>),
) {
    store_ret(f, 0, |f| {
        f.i32_const(0);
    });
    store_ret(f, 4, ptr);
    store_ret(f, 8, len);
    f.i32_const(INVOKE_RET as i32).return_();
}

/// `return err(kind, message at (ptr, len))`.
fn return_err(
    f: &mut InstructionSink<'_>,
    kind: i32,
    ptr: impl FnOnce(&mut InstructionSink<'_>),
    len: impl FnOnce(&mut InstructionSink<'_>),
) {
    store_ret(f, 0, |f| {
        f.i32_const(1);
    });
    store_ret(f, 4, |f| {
        f.i32_const(kind);
    });
    store_ret(f, 8, ptr);
    store_ret(f, 12, len);
    f.i32_const(INVOKE_RET as i32).return_();
}

fn core_module(version: &str, world_version: &str, table: &[(&str, bool)]) -> Vec<u8> {
    let mut types = TypeSection::new();
    let i32s = |n: usize| vec![ValType::I32; n];
    types.ty().function(i32s(3), []); // 0: get(key ptr, len, retptr)
    types.ty().function(i32s(5), []); // 1: put(key ptr, len, value ptr, len, retptr)
    types.ty().function(i32s(2), []); // 2: emit(ptr, len)
    types.ty().function(i32s(4), [ValType::I32]); // 3: cabi_realloc
    types.ty().function([], [ValType::I32]); // 4: version, methods
    let mut invoke_params = i32s(6);
    invoke_params.push(ValType::I64);
    invoke_params.extend(i32s(4));
    types.ty().function(invoke_params, [ValType::I32]); // 5: invoke

    let mut imports = ImportSection::new();
    let state = format!("substra:orchestrator/state@{world_version}");
    imports.import(&state, "get", EntityType::Function(0));
    imports.import(&state, "put", EntityType::Function(1));
    imports.import(&format!("substra:orchestrator/events@{world_version}"), "emit", EntityType::Function(2));

    let mut functions = FunctionSection::new();
    functions.function(3); // 3: cabi_realloc
    functions.function(4); // 4: version
    functions.function(4); // 5: methods
    functions.function(5); // 6: invoke

    let mut memories = MemorySection::new();
    memories.memory(MemoryType { minimum: 1, maximum: None, memory64: false, shared: false, page_size_log2: None });

    let mut globals = GlobalSection::new();
    globals
        .global(GlobalType { val_type: ValType::I32, mutable: true, shared: false }, &ConstExpr::i32_const(HEAP_START));

    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("cabi_realloc", ExportKind::Func, 3);
    let api = format!("substra:orchestrator/api@{world_version}");
    exports.export(&format!("{api}#version"), ExportKind::Func, 4);
    exports.export(&format!("{api}#methods"), ExportKind::Func, 5);
    exports.export(&format!("{api}#invoke"), ExportKind::Func, 6);

    let mut code = CodeSection::new();

    // cabi_realloc(old_ptr, old_size, align, new_size) -> ptr: a bump allocator.
    let mut realloc = Function::new([(1, ValType::I32)]);
    {
        let f = &mut realloc.instructions();
        // p = (heap + align - 1) & -align
        f.global_get(0).local_get(2).i32_add().i32_const(1).i32_sub();
        f.i32_const(0).local_get(2).i32_sub().i32_and().local_set(4);
        // heap = p + new_size
        f.local_get(4).local_get(3).i32_add().global_set(0);
        // while heap > memory.size * 64 KiB: grow one page or trap
        f.loop_(BlockType::Empty);
        f.global_get(0).memory_size(0).i32_const(16).i32_shl().i32_gt_u();
        f.if_(BlockType::Empty);
        f.i32_const(1).memory_grow(0).i32_const(-1).i32_eq();
        f.if_(BlockType::Empty).unreachable().end();
        f.br(1);
        f.end();
        f.end();
        f.local_get(4).end();
    }
    code.function(&realloc);

    let mut version_fn = Function::new([]);
    version_fn.instructions().i32_const(VERSION_RET as i32).end();
    code.function(&version_fn);
    let mut methods_fn = Function::new([]);
    methods_fn.instructions().i32_const(METHODS_RET as i32).end();
    code.function(&methods_fn);

    // invoke(msp ptr, len, channel ptr, len, tx ptr, len, time, method ptr, len, req ptr, len)
    const REQ_PTR: u32 = 9;
    const REQ_LEN: u32 = 10;
    const OP: u32 = 11;
    let version_len = version.len() as i32;
    let mut invoke = Function::new([(1, ValType::I32)]);
    {
        let f = &mut invoke.instructions();
        f.local_get(REQ_LEN).i32_eqz().if_(BlockType::Empty);
        return_ok(
            f,
            |f| {
                f.i32_const(VERSION_AT as i32);
            },
            |f| {
                f.i32_const(version_len);
            },
        );
        f.end();
        f.local_get(REQ_PTR).i32_load8_u(mem(0, 0)).local_set(OP);

        let when = |f: &mut InstructionSink<'_>, op: u8| {
            f.local_get(OP).i32_const(i32::from(op)).i32_eq().if_(BlockType::Empty);
        };

        when(f, op::TRAP);
        f.unreachable().end();

        when(f, op::SPIN);
        f.loop_(BlockType::Empty).br(0).end();
        f.end();

        when(f, op::GROW);
        f.loop_(BlockType::Empty);
        f.i32_const(16).memory_grow(0).i32_const(-1).i32_ne().br_if(0);
        f.end();
        f.unreachable().end();

        for (op, fails) in [(op::PUT_EMIT_OK, false), (op::PUT_EMIT_ERR, true)] {
            when(f, op);
            f.i32_const(KEY_AT as i32).i32_const(1);
            f.local_get(REQ_PTR).local_get(REQ_LEN).i32_const(IMPORT_RET as i32);
            f.call(F_PUT);
            f.local_get(REQ_PTR).local_get(REQ_LEN).call(F_EMIT);
            if fails {
                return_err(
                    f,
                    0,
                    |f| {
                        f.i32_const(NOPE_AT as i32);
                    },
                    |f| {
                        f.i32_const(4);
                    },
                );
            } else {
                return_ok(
                    f,
                    |f| {
                        f.local_get(REQ_PTR);
                    },
                    |f| {
                        f.local_get(REQ_LEN);
                    },
                );
            }
            f.end();
        }

        // get: result<option<list<u8>>, state-error> at IMPORT_RET: discriminant at 0, payload
        // at 8 (state-error holds a u64): option discriminant at 8, list at 12/16; state-error
        // discriminant at 8, string at 16/20.
        when(f, op::GET);
        f.i32_const(KEY_AT as i32).i32_const(1).i32_const(IMPORT_RET as i32).call(F_GET);
        f.i32_const(IMPORT_RET as i32).i32_load8_u(mem(0, 0)).if_(BlockType::Empty);
        return_err(
            f,
            3,
            |f| {
                f.i32_const(IMPORT_RET as i32).i32_load(mem(16, 2));
            },
            |f| {
                f.i32_const(IMPORT_RET as i32).i32_load(mem(20, 2));
            },
        );
        f.end();
        f.i32_const(IMPORT_RET as i32).i32_load8_u(mem(8, 0)).if_(BlockType::Empty);
        return_ok(
            f,
            |f| {
                f.i32_const(IMPORT_RET as i32).i32_load(mem(12, 2));
            },
            |f| {
                f.i32_const(IMPORT_RET as i32).i32_load(mem(16, 2));
            },
        );
        f.end();
        return_ok(
            f,
            |f| {
                f.i32_const(VERSION_AT as i32);
            },
            |f| {
                f.i32_const(version_len);
            },
        );
        f.end();

        f.unreachable().end();
    }
    code.function(&invoke);

    let mut data = DataSection::new();
    let mut put = |at: u32, bytes: &[u8]| {
        data.active(0, &ConstExpr::i32_const(at as i32), bytes.iter().copied());
    };
    assert!(version.len() <= (RUN_AT - VERSION_AT) as usize);
    put(VERSION_AT, version.as_bytes());
    put(RUN_AT, RUN.as_bytes());
    put(QUERY_AT, QUERY.as_bytes());
    put(KEY_AT, b"k");
    put(NOPE_AT, b"nope");
    put(EXTRA_AT, EXTRA.as_bytes());
    assert!(table.len() <= ((VERSION_RET - METHODS_AT) / 12) as usize);
    let mut methods = Vec::new();
    for &(name, read_only) in table {
        let at = match name {
            RUN => RUN_AT,
            QUERY => QUERY_AT,
            EXTRA => EXTRA_AT,
            other => panic!("the test component cannot list {other}"),
        };
        methods.extend(at.to_le_bytes());
        methods.extend((name.len() as u32).to_le_bytes());
        methods.extend([u8::from(read_only), 0, 0, 0]);
    }
    put(METHODS_AT, &methods);
    let mut ret = Vec::new();
    ret.extend(VERSION_AT.to_le_bytes());
    ret.extend((version.len() as u32).to_le_bytes());
    put(VERSION_RET, &ret);
    let mut ret = Vec::new();
    ret.extend(METHODS_AT.to_le_bytes());
    ret.extend((table.len() as u32).to_le_bytes());
    put(METHODS_RET, &ret);

    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&code)
        .section(&data);
    module.finish()
}

/// A component of the `orchestrator` world reporting `version` (distinct versions give
/// distinct bytes, hence distinct sha256), with the method table [`METHODS`].
pub fn test_component(version: &str) -> Vec<u8> {
    test_component_of(version, WORLD_VERSION, &METHODS)
}

/// [`test_component`] built against the world of package version `world_version`, listing the
/// methods of `table` (`(name, read-only)`, names among [`RUN`], [`QUERY`] and [`EXTRA`]).
pub fn test_component_of(version: &str, world_version: &str, table: &[(&str, bool)]) -> Vec<u8> {
    let mut module = core_module(version, world_version, table);
    let wit = WIT.replace(&format!("@{WORLD_VERSION};"), &format!("@{world_version};"));
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("orchestrator.wit", &wit).unwrap();
    let world = resolve.select_world(&[package], Some("orchestrator")).unwrap();
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    wit_component::ComponentEncoder::default().validate(true).module(&module).unwrap().encode().unwrap()
}
