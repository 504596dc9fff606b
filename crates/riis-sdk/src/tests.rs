//! Unit tests against a mock server: a `riis_api` table implemented here,
//! over plain Rust structs standing behind the opaque handles.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use riis_abi::{
    self as abi, riis_allocator, riis_api, riis_completion_info, riis_context, riis_data_chunk,
    riis_execution_stats, riis_global_module, riis_global_provider, riis_hresult,
    riis_module_factory, riis_module_instance, riis_provider, riis_registration, riis_server,
};

use crate::*;

// ------------------------------------------------------------- the mock

type Cleanup = Option<unsafe extern "C" fn(*mut c_void)>;

struct Slot {
    data: *mut c_void,
    cleanup: Cleanup,
}

struct MockCtx {
    method: CString,
    url: CString,
    query: CString,
    request_headers: Vec<(String, String)>,
    status: u16,
    substatus: u16,
    reason: Option<String>,
    error: riis_hresult,
    description: Option<String>,
    response_headers: Vec<(String, String)>,
    body: Vec<u8>,
    headers_sent: bool,
    need_disconnect: bool,
    reset: bool,
    slots: [Slot; 3],
    /// Strings handed out, kept until the "request" ends.
    strings: Vec<CString>,
    allocations: Vec<Vec<u128>>,
    read: Option<(*mut c_void, usize)>,
    posted: Vec<u64>,
    full_duplex: bool,
    delivery: Option<(abi::riis_delivered_fn, usize)>,
    indicated: Vec<u32>,
    raised: Vec<(String, bool)>,
    logs: Vec<String>,
    executed: usize,
    released: usize,
    bad_utf8_header: bool,
}

impl MockCtx {
    fn new(url: &str, query: &str) -> Box<Self> {
        Box::new(Self {
            method: CString::new("GET").unwrap(),
            url: CString::new(url).unwrap(),
            query: CString::new(query).unwrap(),
            request_headers: vec![("Host".into(), "example.test".into())],
            status: 200,
            substatus: 0,
            reason: None,
            error: 0,
            description: None,
            response_headers: Vec::new(),
            body: Vec::new(),
            headers_sent: false,
            need_disconnect: false,
            reset: false,
            slots: std::array::from_fn(|_| Slot {
                data: std::ptr::null_mut(),
                cleanup: None,
            }),
            strings: Vec::new(),
            allocations: Vec::new(),
            read: None,
            posted: Vec::new(),
            full_duplex: false,
            delivery: None,
            indicated: Vec::new(),
            raised: Vec::new(),
            logs: Vec::new(),
            executed: 0,
            released: 0,
            bad_utf8_header: false,
        })
    }

    fn keep(&mut self, s: &str) -> *const c_char {
        self.strings.push(CString::new(s).unwrap());
        self.strings.last().unwrap().as_ptr()
    }

    /// The end of the request: run every cleanup once.
    fn end(&mut self) {
        for slot in &mut self.slots {
            let data = std::mem::replace(&mut slot.data, std::ptr::null_mut());
            if let Some(cleanup) = slot.cleanup.take() {
                // SAFETY: the cleanup the module registered for `data`.
                unsafe { cleanup(data) };
            }
        }
    }
}

/// A request for a test: the mock behind a `riis_context*`.
struct Request(*mut MockCtx);

impl Request {
    fn new(url: &str, query: &str) -> Self {
        Self(Box::into_raw(MockCtx::new(url, query)))
    }
    fn ctx(&self) -> *mut riis_context {
        self.0.cast()
    }
    #[allow(clippy::mut_from_ref)] // a test handle over a raw mock
    fn mock(&self) -> &mut MockCtx {
        // SAFETY: alive until drop; tests use one borrow at a time, never
        // across a call into the SDK.
        unsafe { &mut *self.0 }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.mock().end();
        // SAFETY: from Box::into_raw in `new`.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

fn m<'a>(ctx: *mut riis_context) -> &'a mut MockCtx {
    // SAFETY: every context the mock sees is a `MockCtx` of a live `Request`.
    unsafe { &mut *ctx.cast::<MockCtx>() }
}

fn s<'a>(p: *const c_char) -> &'a str {
    // SAFETY: the SDK passes NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap()
}

#[derive(Default)]
struct MockRegistration {
    name: CString,
    factory: Option<*const riis_module_factory>,
    notifications: u32,
    post: u32,
    global: Option<*const riis_global_module>,
    global_notifications: u32,
    priorities: Vec<(u32, String)>,
    sections: Vec<String>,
    section_keys: Vec<(u32, Vec<String>)>,
}

fn reg<'a>(r: *mut riis_registration) -> &'a mut MockRegistration {
    // SAFETY: every registration the mock sees is a live `MockRegistration`.
    unsafe { &mut *r.cast::<MockRegistration>() }
}

struct MockProvider {
    kind: u32,
    type_name: CString,
    data: *mut c_void,
    headers_being_sent: bool,
    flags: u32,
}

impl MockProvider {
    /// A provider of `kind` for a send that carries the headers.
    fn of(kind: u32) -> Self {
        Self {
            kind,
            type_name: CString::default(),
            data: std::ptr::null_mut(),
            headers_being_sent: true,
            flags: 0,
        }
    }
}

fn p<'a>(provider: *mut riis_provider) -> &'a mut MockProvider {
    // SAFETY: every provider the mock sees is a live `MockProvider`.
    unsafe { &mut *provider.cast::<MockProvider>() }
}

type Hook = Box<dyn FnMut(&str, *mut c_void)>;

thread_local! {
    /// Delivers a raised custom notification: (type name, data).
    static CUSTOM_HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

static SERVER_LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

type Ctx = *mut riis_context;
type Reg = *mut riis_registration;
type Prov = *mut riis_provider;
type GProv = *mut riis_global_provider;
type Str = *const c_char;
const OK: riis_hresult = abi::hr::S_OK;

unsafe extern "C" fn set_request_notifications(
    r: Reg,
    f: *const riis_module_factory,
    n: u32,
    post: u32,
) -> riis_hresult {
    let r = reg(r);
    r.factory = Some(f);
    r.notifications = n;
    r.post = post;
    OK
}
unsafe extern "C" fn set_priority(r: Reg, n: u32, p: Str) -> riis_hresult {
    reg(r).priorities.push((n, s(p).to_owned()));
    OK
}
unsafe extern "C" fn set_global_notifications(
    r: Reg,
    g: *const riis_global_module,
    n: u32,
) -> riis_hresult {
    let r = reg(r);
    r.global = Some(g);
    r.global_notifications = n;
    OK
}
unsafe extern "C" fn registration_name(r: Reg) -> Str {
    reg(r).name.as_ptr()
}
unsafe extern "C" fn registration_id(_: Reg) -> u32 {
    7
}
unsafe extern "C" fn allocator_allocate(_: *mut riis_allocator, _: usize) -> *mut c_void {
    std::ptr::null_mut()
}
unsafe extern "C" fn context_allocate(c: Ctx, n: usize) -> *mut c_void {
    let mut block = vec![0u128; n.div_ceil(16)];
    let ptr = block.as_mut_ptr().cast();
    m(c).allocations.push(block);
    ptr
}
unsafe extern "C" fn site_name(c: Ctx) -> Str {
    m(c).keep("Default")
}
unsafe extern "C" fn site_id(_: Ctx) -> u32 {
    1
}
unsafe extern "C" fn request_id(_: Ctx) -> u64 {
    42
}
unsafe extern "C" fn physical_path(c: Ctx) -> Str {
    m(c).keep("/srv/www/index.html")
}
unsafe extern "C" fn map_path(c: Ctx, url: Str) -> Str {
    let path = format!("/srv/www{}", s(url));
    m(c).keep(&path)
}
unsafe extern "C" fn null_str(_: Ctx) -> Str {
    std::ptr::null()
}
unsafe extern "C" fn ok(_: Ctx) -> riis_hresult {
    OK
}
unsafe extern "C" fn is_last(_: Ctx, _: u32) -> c_int {
    0
}
unsafe extern "C" fn execution_stats(_: Ctx, stats: *mut riis_execution_stats) -> riis_hresult {
    // SAFETY: the SDK passes a valid record.
    let stats = unsafe { &mut *stats };
    stats.notification = abi_bit("RIIS_RQ_BEGIN_REQUEST");
    stats.is_post = 0;
    stats.module = c"Test".as_ptr();
    OK
}
unsafe extern "C" fn server_variable(c: Ctx, name: Str, _: *mut usize) -> Str {
    match s(name) {
        "REMOTE_ADDR" => m(c).keep("127.0.0.1"),
        _ => std::ptr::null(),
    }
}
unsafe extern "C" fn set_server_variable(_: Ctx, _: Str, _: Str) -> riis_hresult {
    OK
}
thread_local! {
    /// The site-scope slot: shared by the requests of one test (thread).
    static SITE_SLOT: RefCell<Slot> = const {
        RefCell::new(Slot {
            data: std::ptr::null_mut(),
            cleanup: None,
        })
    };
}

unsafe extern "C" fn module_context(c: Ctx, scope: u32) -> *mut c_void {
    if scope == abi::SCOPE_SITE {
        return SITE_SLOT.with(|s| s.borrow().data);
    }
    m(c).slots[scope as usize].data
}
unsafe extern "C" fn set_module_context(
    c: Ctx,
    scope: u32,
    data: *mut c_void,
    cleanup: Cleanup,
) -> riis_hresult {
    if scope > 2 {
        return abi::hr::E_INVALIDARG;
    }
    // As the server: shared scopes keep their first value.
    if scope != abi::SCOPE_REQUEST {
        let taken = if scope == abi::SCOPE_SITE {
            SITE_SLOT.with(|s| !s.borrow().data.is_null())
        } else {
            !m(c).slots[scope as usize].data.is_null()
        };
        if data.is_null() {
            return abi::hr::E_INVALIDARG;
        }
        if taken {
            return abi::hr::E_ALREADY_ASSIGNED;
        }
    }
    let old = if scope == abi::SCOPE_SITE {
        SITE_SLOT.with(|s| std::mem::replace(&mut *s.borrow_mut(), Slot { data, cleanup }))
    } else {
        std::mem::replace(&mut m(c).slots[scope as usize], Slot { data, cleanup })
    };
    if let Some(cleanup) = old.cleanup {
        // SAFETY: the cleanup registered for the old value.
        unsafe { cleanup(old.data) };
    }
    OK
}
unsafe extern "C" fn raise_custom(c: Ctx, name: Str, data: *mut c_void) -> riis_hresult {
    m(c).raised.push((s(name).to_owned(), data.is_null()));
    let name = s(name).to_owned();
    CUSTOM_HOOK.with(|h| {
        if let Some(hook) = h.borrow_mut().as_mut() {
            hook(&name, data);
        }
    });
    OK
}
unsafe extern "C" fn raise_custom_with_flags(
    c: Ctx,
    name: Str,
    data: *mut c_void,
    _: u32,
) -> riis_hresult {
    // SAFETY: the same arguments, as the mock server got them.
    unsafe { raise_custom(c, name, data) }
}
unsafe extern "C" fn no_custom_flags(_: Prov) -> u32 {
    0
}
unsafe extern "C" fn no_global_custom_flags(_: GProv) -> u32 {
    0
}
unsafe extern "C" fn context_clone(c: Ctx) -> Ctx {
    let child = MockCtx::new(s(m(c).url.as_ptr()), "");
    Box::into_raw(child).cast()
}
unsafe extern "C" fn release_clone(c: Ctx, child: Ctx) {
    m(c).released += 1;
    // SAFETY: made by `context_clone`.
    drop(unsafe { Box::from_raw(child.cast::<MockCtx>()) });
}
unsafe extern "C" fn execute_request(c: Ctx, child: Ctx, _: u32) -> riis_hresult {
    m(c).executed += 1;
    // SAFETY: made by `context_clone`; consumed here.
    let child = unsafe { Box::from_raw(child.cast::<MockCtx>()) };
    m(c).logs.push(format!("child {}", s(child.url.as_ptr())));
    OK
}
unsafe extern "C" fn indicate_completion(c: Ctx, status: u32) -> riis_hresult {
    m(c).indicated.push(status);
    OK
}
/// Posted completions, for tests that wait for another thread.
static POSTED: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn post_completion(c: Ctx, bytes: u64) -> riis_hresult {
    m(c).posted.push(bytes);
    POSTED.fetch_add(1, Ordering::Release);
    OK
}
unsafe extern "C" fn enable_full_duplex(c: Ctx) -> riis_hresult {
    m(c).full_duplex = true;
    OK
}
unsafe extern "C" fn on_response_delivered(
    c: Ctx,
    delivered: Option<abi::riis_delivered_fn>,
    data: *mut c_void,
) -> riis_hresult {
    m(c).delivery = Some((delivered.unwrap(), data as usize));
    OK
}
unsafe extern "C" fn config_value(c: Ctx, section: u32, key: Str) -> Str {
    if section == 3 && s(key) == "greeting" {
        m(c).keep("hi")
    } else {
        std::ptr::null()
    }
}
unsafe extern "C" fn declare_section(r: Reg, name: Str, id: *mut u32) -> riis_hresult {
    let r = reg(r);
    r.sections.push(s(name).to_owned());
    // SAFETY: the SDK passes a valid out-pointer.
    unsafe { *id = 3 };
    OK
}
unsafe extern "C" fn declare_section_keys(
    r: Reg,
    section: u32,
    keys: *const Str,
    count: usize,
) -> riis_hresult {
    let r = reg(r);
    // SAFETY: the SDK passes `count` valid C strings.
    let keys: Vec<String> = (0..count)
        .map(|i| s(unsafe { *keys.add(i) }).to_owned())
        .collect();
    r.section_keys.push((section, keys));
    OK
}
/// The log source the mock server gives every registration.
const LOG_SOURCE: u32 = 7;
unsafe extern "C" fn registration_log_source(_: Reg) -> u32 {
    LOG_SOURCE
}
unsafe extern "C" fn log_from_source(source: u32, _: u32, message: Str) {
    SERVER_LOG
        .lock()
        .unwrap()
        .push(format!("[source {source}] {}", s(message)));
}
unsafe extern "C" fn log(c: Ctx, _: u32, message: Str) {
    let message = s(message).to_owned();
    if c.is_null() {
        SERVER_LOG.lock().unwrap().push(message);
    } else {
        m(c).logs.push(message);
    }
}
unsafe extern "C" fn request_method(c: Ctx) -> Str {
    m(c).method.as_ptr()
}
unsafe extern "C" fn request_set_method(c: Ctx, method: Str) -> riis_hresult {
    m(c).method = CString::new(s(method)).unwrap();
    OK
}
unsafe extern "C" fn request_url(c: Ctx) -> Str {
    m(c).url.as_ptr()
}
unsafe extern "C" fn request_query(c: Ctx) -> Str {
    m(c).query.as_ptr()
}
unsafe extern "C" fn request_set_url(c: Ctx, url: Str) -> riis_hresult {
    m(c).url = CString::new(s(url)).unwrap();
    OK
}
fn header_of(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}
unsafe extern "C" fn request_header(c: Ctx, name: Str, _: *mut usize) -> Str {
    let mock = m(c);
    if mock.bad_utf8_header && s(name) == "X-Bad" {
        mock.strings.push(CString::new(vec![0xFF, 0xFE]).unwrap());
        return mock.strings.last().unwrap().as_ptr();
    }
    match header_of(&mock.request_headers, s(name)) {
        Some(v) => mock.keep(&v),
        None => std::ptr::null(),
    }
}
fn set_in(headers: &mut Vec<(String, String)>, name: &str, value: &str, replace: bool) {
    if replace {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    headers.push((name.to_owned(), value.to_owned()));
}
unsafe extern "C" fn request_set_header(c: Ctx, n: Str, v: Str, replace: c_int) -> riis_hresult {
    set_in(&mut m(c).request_headers, s(n), s(v), replace != 0);
    OK
}
unsafe extern "C" fn request_delete_header(c: Ctx, n: Str) -> riis_hresult {
    m(c).request_headers
        .retain(|(h, _)| !h.eq_ignore_ascii_case(s(n)));
    OK
}
unsafe extern "C" fn request_header_names(c: Ctx, names: *mut Str, capacity: usize) -> usize {
    let mock = m(c);
    let all: Vec<String> = mock
        .request_headers
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    for (i, name) in all.iter().enumerate().take(capacity) {
        let ptr = mock.keep(name);
        // SAFETY: the SDK passes room for `capacity` pointers.
        unsafe { *names.add(i) = ptr };
    }
    all.len()
}
unsafe extern "C" fn request_http_version(_: Ctx, major: *mut u16, minor: *mut u16) {
    // SAFETY: valid out-pointers.
    unsafe {
        *major = 1;
        *minor = 1;
    }
}
unsafe extern "C" fn request_address(
    c: Ctx,
    remote: c_int,
    address: *mut Str,
    port: *mut u16,
) -> riis_hresult {
    let (text, number) = if remote != 0 {
        ("::1", 50000)
    } else {
        ("127.0.0.1", 8080)
    };
    let text = m(c).keep(text);
    // SAFETY: valid out-pointers.
    unsafe {
        *address = text;
        *port = number;
    }
    OK
}
unsafe extern "C" fn request_read_entity_body(
    c: Ctx,
    buffer: *mut c_void,
    n: usize,
) -> riis_hresult {
    m(c).read = Some((buffer, n));
    OK
}
unsafe extern "C" fn insert_entity_body(_: Ctx, _: *const c_void, _: usize) -> riis_hresult {
    OK
}
unsafe extern "C" fn remaining(_: Ctx) -> i64 {
    -1
}
unsafe extern "C" fn response_status(c: Ctx, status: *mut u16, substatus: *mut u16) {
    // SAFETY: valid out-pointers.
    unsafe {
        *status = m(c).status;
        *substatus = m(c).substatus;
    }
}
unsafe extern "C" fn response_set_status(
    c: Ctx,
    status: u16,
    reason: Str,
    substatus: u16,
    error: riis_hresult,
) -> riis_hresult {
    let mock = m(c);
    if mock.headers_sent {
        return abi::hr::E_INVALID_STATE;
    }
    mock.status = status;
    mock.substatus = substatus;
    mock.reason = (!reason.is_null()).then(|| s(reason).to_owned());
    mock.error = error;
    OK
}
unsafe extern "C" fn response_set_error_description(c: Ctx, text: Str) -> riis_hresult {
    m(c).description = Some(s(text).to_owned());
    OK
}
unsafe extern "C" fn response_header(c: Ctx, name: Str, _: *mut usize) -> Str {
    let mock = m(c);
    match header_of(&mock.response_headers, s(name)) {
        Some(v) => mock.keep(&v),
        None => std::ptr::null(),
    }
}
unsafe extern "C" fn response_set_header(c: Ctx, n: Str, v: Str, replace: c_int) -> riis_hresult {
    set_in(&mut m(c).response_headers, s(n), s(v), replace != 0);
    OK
}
unsafe extern "C" fn response_delete_header(c: Ctx, n: Str) -> riis_hresult {
    m(c).response_headers
        .retain(|(h, _)| !h.eq_ignore_ascii_case(s(n)));
    OK
}
unsafe extern "C" fn response_clear(c: Ctx) -> riis_hresult {
    let mock = m(c);
    mock.status = 200;
    mock.response_headers.clear();
    mock.body.clear();
    OK
}
unsafe extern "C" fn write_chunks(
    c: Ctx,
    chunks: *const riis_data_chunk,
    count: u32,
    written: *mut u64,
) -> riis_hresult {
    // SAFETY: the SDK passes `count` valid chunks.
    let chunks = unsafe { std::slice::from_raw_parts(chunks, count as usize) };
    let mut total = 0;
    for chunk in chunks {
        match chunk.r#type {
            abi::CHUNK_FROM_MEMORY => {
                // SAFETY: a memory chunk of `buffer_length` bytes.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        chunk.buffer.cast::<u8>(),
                        chunk.buffer_length as usize,
                    )
                };
                m(c).body.extend_from_slice(bytes);
                total += chunk.buffer_length;
            }
            abi::CHUNK_FROM_FILE_NAME => {
                let text = format!(
                    "[file {} {}+{}]",
                    s(chunk.file_name),
                    chunk.offset,
                    chunk.length
                );
                m(c).body.extend_from_slice(text.as_bytes());
            }
            _ => return abi::hr::E_NOTIMPL,
        }
    }
    // SAFETY: a valid out-pointer.
    unsafe { *written = total };
    OK
}
unsafe extern "C" fn flush(_: Ctx, _: c_int, _: c_int) -> riis_hresult {
    OK
}
unsafe extern "C" fn redirect(c: Ctx, url: Str, status: u16) -> riis_hresult {
    let mock = m(c);
    mock.status = status;
    set_in(&mut mock.response_headers, "Location", s(url), true);
    OK
}
unsafe extern "C" fn need_disconnect(c: Ctx) -> riis_hresult {
    m(c).need_disconnect = true;
    OK
}
unsafe extern "C" fn reset_connection(c: Ctx) -> riis_hresult {
    m(c).reset = true;
    OK
}
unsafe extern "C" fn skip_custom_errors(_: Ctx, _: c_int) -> riis_hresult {
    OK
}
unsafe extern "C" fn headers_sent(c: Ctx) -> c_int {
    m(c).headers_sent as c_int
}
unsafe extern "C" fn user_present(_: Ctx) -> c_int {
    1
}
unsafe extern "C" fn user_name(c: Ctx) -> Str {
    m(c).keep("alice")
}
unsafe extern "C" fn user_auth(c: Ctx) -> Str {
    m(c).keep("Basic")
}
unsafe extern "C" fn user_in_role(_: Ctx, role: Str) -> c_int {
    (s(role) == "admin") as c_int
}
unsafe extern "C" fn set_user(_: Ctx, _: Str, _: Str, _: *const Str, _: usize) -> riis_hresult {
    OK
}
unsafe extern "C" fn provider_kind(pr: Prov) -> u32 {
    p(pr).kind
}
unsafe extern "C" fn send_headers(pr: Prov) -> c_int {
    p(pr).headers_being_sent as c_int
}
unsafe extern "C" fn send_final(_: Prov) -> c_int {
    1
}
unsafe extern "C" fn send_defer_after(
    _: Prov,
    _: Ctx,
    at: u64,
    deferred: *mut c_int,
) -> riis_hresult {
    // SAFETY: a valid out-pointer. The mock's entities are all short: a
    // rest exists only when less than 4 bytes are kept.
    unsafe { *deferred = c_int::from(at < 4) };
    OK
}
unsafe extern "C" fn send_is_flush(_: Prov) -> c_int {
    0
}
unsafe extern "C" fn virtual_directory(_: Ctx, path: *mut Str, folder: *mut Str) -> riis_hresult {
    // SAFETY: writable out-pointers.
    unsafe {
        *path = c"/pictures".as_ptr();
        *folder = c"/srv/pictures".as_ptr();
    }
    OK
}
unsafe extern "C" fn location_path(_: Ctx) -> Str {
    c"/pictures/thumbs".as_ptr()
}
unsafe extern "C" fn delete_trailer(_: Ctx, _: Str) -> riis_hresult {
    OK
}
unsafe extern "C" fn trailer(_: Ctx, _: Str, _: *mut usize) -> Str {
    c"0".as_ptr()
}
unsafe extern "C" fn set_trailer(_: Ctx, name: Str, _: Str, _: c_int) -> riis_hresult {
    // SAFETY: a C string from the SDK.
    let name = unsafe { CStr::from_ptr(name) };
    if name.to_bytes().eq_ignore_ascii_case(b"content-length") {
        riis_abi::hr::E_INVALIDARG
    } else {
        OK
    }
}
unsafe extern "C" fn send_flags(pr: Prov) -> u32 {
    p(pr).flags
}
unsafe extern "C" fn send_set_flags(pr: Prov, flags: u32) -> riis_hresult {
    p(pr).flags = flags;
    OK
}
unsafe extern "C" fn read_entity(
    _: Prov,
    data: *mut *const c_void,
    len: *mut usize,
) -> riis_hresult {
    // SAFETY: valid out-pointers.
    unsafe {
        *data = b"abc".as_ptr().cast();
        *len = 3;
    }
    OK
}
unsafe extern "C" fn read_set_entity(_: Prov, _: *const c_void, _: usize) -> riis_hresult {
    OK
}
unsafe extern "C" fn prov_str(_: Prov) -> Str {
    c"/x".as_ptr()
}
unsafe extern "C" fn prov_set_str(_: Prov, _: Str) -> riis_hresult {
    OK
}
unsafe extern "C" fn custom_type(pr: Prov) -> Str {
    p(pr).type_name.as_ptr()
}
unsafe extern "C" fn custom_data(pr: Prov) -> *mut c_void {
    p(pr).data
}
unsafe extern "C" fn global_context(g: GProv) -> Ctx {
    g.cast()
}
unsafe extern "C" fn global_application(
    _: GProv,
    name: *mut Str,
    id: *mut u32,
    root: *mut Str,
) -> riis_hresult {
    // SAFETY: valid out-pointers.
    unsafe {
        *name = c"Default".as_ptr();
        *id = 1;
        *root = c"/srv/www".as_ptr();
    }
    OK
}
/// The application's container is the site slot the requests reach.
unsafe extern "C" fn global_application_module_context(_: GProv) -> *mut c_void {
    // SAFETY: the site scope does not touch the context.
    unsafe { module_context(std::ptr::null_mut(), abi::SCOPE_SITE) }
}
unsafe extern "C" fn global_application_set_module_context(
    _: GProv,
    data: *mut c_void,
    cleanup: Cleanup,
) -> riis_hresult {
    // SAFETY: as above.
    unsafe { set_module_context(std::ptr::null_mut(), abi::SCOPE_SITE, data, cleanup) }
}
/// The SDK sets users with their roles listed; these are the C++ layer's.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn set_user_with_role_check(
    _: Ctx,
    _: Str,
    _: Str,
    _: *const Str,
    _: usize,
    _: Option<abi::riis_role_check_fn>,
    _: *mut c_void,
    _: Cleanup,
) -> riis_hresult {
    abi::hr::E_NOTIMPL
}
unsafe extern "C" fn user_role_check_data(
    _: Ctx,
    _: Option<abi::riis_role_check_fn>,
) -> *mut c_void {
    std::ptr::null_mut()
}
unsafe extern "C" fn connection_is_connected(_: Ctx) -> c_int {
    1
}
unsafe extern "C" fn global_file(_: GProv) -> Str {
    c"/srv/www/a.txt".as_ptr()
}
unsafe extern "C" fn global_cache(
    _: GProv,
    op: *mut u32,
    key: *mut Str,
    bytes: *mut u64,
) -> riis_hresult {
    // SAFETY: valid out-pointers.
    unsafe {
        *op = abi::CACHE_ADD;
        *key = c"/srv/www/a.txt".as_ptr();
        *bytes = 10;
    }
    OK
}
unsafe extern "C" fn global_trace(
    _: GProv,
    module: *mut Str,
    n: *mut u32,
    post: *mut c_int,
    url: *mut Str,
    phase: *mut u32,
    elapsed: *mut u64,
) -> riis_hresult {
    // SAFETY: valid out-pointers.
    unsafe {
        *module = c"Test".as_ptr();
        *n = 1;
        *post = 0;
        *url = c"/".as_ptr();
        *phase = 1;
        *elapsed = 5;
    }
    OK
}
unsafe extern "C" fn global_custom_type(_: GProv) -> Str {
    c"g".as_ptr()
}
unsafe extern "C" fn global_custom_data(_: GProv) -> *mut c_void {
    std::ptr::null_mut()
}
/// What global modules wrote to the mock's RscaQuery.
static RSCA_ANSWER: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
unsafe extern "C" fn global_rsca_query(
    _: GProv,
    function: *mut Str,
    parameters: *mut Str,
) -> riis_hresult {
    // SAFETY: valid out-pointers.
    unsafe {
        *function = c"status".as_ptr();
        *parameters = c"verbose".as_ptr();
    }
    OK
}
/// The fake connection presented a certificate whose DER is these bytes.
const FAKE_CERTIFICATE: &[u8] = b"0\x82 a certificate";
unsafe extern "C" fn request_client_certificate(
    _: Ctx,
    der: *mut *const u8,
    length: *mut usize,
    negotiated: *mut c_int,
) -> riis_hresult {
    // SAFETY: valid out-pointers.
    unsafe {
        *der = FAKE_CERTIFICATE.as_ptr();
        *length = FAKE_CERTIFICATE.len();
        *negotiated = 1;
    }
    OK
}
unsafe extern "C" fn global_rsca_write(_: GProv, text: Str, length: usize) -> riis_hresult {
    // SAFETY: the SDK passes `length` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(text.cast::<u8>(), length) };
    if bytes == b"refuse me" {
        return abi::hr::E_INVALIDARG;
    }
    RSCA_ANSWER
        .lock()
        .unwrap()
        .push_str(std::str::from_utf8(bytes).unwrap());
    OK
}
unsafe extern "C" fn response_header_names(_: Ctx, _: *mut Str, _: usize) -> usize {
    0
}
unsafe extern "C" fn response_entity_chunk_count(_: Ctx) -> u32 {
    0
}
unsafe extern "C" fn response_entity_chunk(
    _: Ctx,
    _: u32,
    _: *mut riis_data_chunk,
) -> riis_hresult {
    abi::hr::E_INVALIDARG
}
unsafe extern "C" fn response_set_entity_chunks(
    _: Ctx,
    _: *const riis_data_chunk,
    _: u32,
) -> riis_hresult {
    abi::hr::S_OK
}

static API: riis_api = riis_api {
    size: std::mem::size_of::<riis_api>() as u32,
    set_request_notifications,
    set_priority_for_request_notification: set_priority,
    set_priority_for_post_request_notification: set_priority,
    set_global_notifications,
    set_priority_for_global_notification: set_priority,
    registration_name,
    registration_id,
    allocator_allocate,
    context_allocate,
    context_site_name: site_name,
    context_site_id: site_id,
    context_request_id: request_id,
    context_physical_path: physical_path,
    context_map_path: map_path,
    context_handler_name: null_str,
    context_set_request_handled: ok,
    context_is_last_notification: is_last,
    context_execution_stats: execution_stats,
    server_variable,
    set_server_variable,
    module_context,
    set_module_context,
    raise_custom_notification: raise_custom,
    raise_global_custom_notification: raise_custom,
    context_clone,
    context_release_clone: release_clone,
    context_execute_request: execute_request,
    indicate_completion,
    post_completion,
    config_value,
    declare_section,
    log,
    request_method,
    request_set_method,
    request_url,
    request_query,
    request_set_url,
    request_header,
    request_set_header,
    request_delete_header,
    request_header_names,
    request_http_version,
    request_address,
    request_read_entity_body,
    request_insert_entity_body: insert_entity_body,
    request_remaining_entity_bytes: remaining,
    response_status,
    response_set_status,
    response_set_error_description,
    response_header,
    response_set_header,
    response_delete_header,
    response_clear,
    response_clear_headers: ok,
    response_write_entity_chunks: write_chunks,
    response_flush: flush,
    response_disable_buffering: ok,
    response_redirect: redirect,
    response_suppress_headers: ok,
    response_set_need_disconnect: need_disconnect,
    response_reset_connection: reset_connection,
    response_set_try_skip_custom_errors: skip_custom_errors,
    response_headers_sent: headers_sent,
    user_present,
    user_name,
    user_authentication_type: user_auth,
    user_is_in_role: user_in_role,
    set_user,
    provider_kind,
    send_headers_being_sent: send_headers,
    send_is_final: send_final,
    send_flags,
    send_set_flags,
    read_entity,
    read_set_entity,
    map_path_url: prov_str,
    map_path_physical_path: prov_str,
    map_path_set_physical_path: prov_set_str,
    custom_type,
    custom_data,
    global_context,
    global_application,
    global_file_path: global_file,
    global_cache_operation: global_cache,
    global_trace_event: global_trace,
    global_custom_type,
    global_custom_data,
    response_header_names,
    response_entity_chunk_count,
    response_entity_chunk,
    response_set_entity_chunks,
    global_rsca_query,
    global_rsca_write,
    request_client_certificate,
    send_defer_after,
    send_is_flush,
    context_virtual_directory: virtual_directory,
    context_location_path: location_path,
    response_trailer: trailer,
    response_set_trailer: set_trailer,
    response_delete_trailer: delete_trailer,
    context_enable_full_duplex: enable_full_duplex,
    raise_custom_notification_with_flags: raise_custom_with_flags,
    raise_global_custom_notification_with_flags: raise_custom_with_flags,
    custom_flags: no_custom_flags,
    global_custom_flags: no_global_custom_flags,
    context_on_response_delivered: on_response_delivered,
    global_application_module_context,
    global_application_set_module_context,
    set_user_with_role_check,
    user_role_check_data,
    connection_is_connected,
    registration_log_source,
    log_from_source,
    declare_section_keys,
};

struct SyncServer(riis_server);

// SAFETY: the record holds pointers to immutable static data only.
unsafe impl Sync for SyncServer {}

static SERVER: SyncServer = SyncServer(riis_server {
    size: std::mem::size_of::<riis_server>() as u32,
    abi_version: abi::ABI_VERSION,
    software: c"riis/test".as_ptr(),
    api: &API,
});

/// Registers a module through the SDK's entry point, as the loader would.
fn register_with(register: RegisterModuleFn) -> (riis_hresult, Box<MockRegistration>) {
    let mut registration = Box::new(MockRegistration {
        name: CString::new("Test").unwrap(),
        ..Default::default()
    });
    let raw: *mut MockRegistration = &mut *registration;
    // SAFETY: valid registration and server, as the loader passes them.
    let code = unsafe { register_module(10, raw.cast(), &SERVER.0, register) };
    (code, registration)
}

/// An instance made by the registered factory.
struct Instance {
    raw: riis_module_instance,
}

impl Instance {
    fn new(registration: &MockRegistration) -> Result<Self, riis_hresult> {
        let factory = registration.factory.expect("a factory");
        let mut raw = riis_module_instance {
            callbacks: std::ptr::null(),
            module: std::ptr::null_mut(),
        };
        // SAFETY: the factory record the SDK registered, alive until
        // terminate.
        let code = unsafe {
            ((*factory).get_http_module.unwrap())(
                (*factory).user_data,
                std::ptr::null_mut(),
                &mut raw,
            )
        };
        if code < 0 {
            return Err(code);
        }
        Ok(Self { raw })
    }

    fn notify(&self, req: &Request, bit: u32, post: bool, provider: *mut MockProvider) -> u32 {
        // SAFETY: the instance's own callbacks, with its module pointer.
        unsafe {
            ((*self.raw.callbacks).on_notification.unwrap())(
                self.raw.module,
                req.ctx(),
                bit,
                post as c_int,
                provider.cast(),
            )
        }
    }

    fn complete(&self, req: &Request, bit: u32, bytes: u64, operation: u32) -> u32 {
        let info = riis_completion_info {
            size: std::mem::size_of::<riis_completion_info>() as u32,
            status: 0,
            bytes,
            operation,
        };
        // SAFETY: as in `notify`.
        unsafe {
            ((*self.raw.callbacks).on_async_completion.unwrap())(
                self.raw.module,
                req.ctx(),
                bit,
                0,
                std::ptr::null_mut(),
                &info,
            )
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: dispose, once, as the server does at the end of a request.
        unsafe { ((*self.raw.callbacks).dispose.unwrap())(self.raw.module) };
    }
}

fn terminate(registration: &MockRegistration) {
    if let Some(f) = registration.factory {
        // SAFETY: the last use of the record.
        unsafe { ((*f).terminate.unwrap())((*f).user_data) };
    }
    if let Some(g) = registration.global {
        // SAFETY: the last use of the record.
        unsafe { ((*g).terminate.unwrap())((*g).user_data) };
    }
}

/// The value of `#define name 0x…u` in the header.
fn abi_bit(name: &str) -> u32 {
    let header = include_str!("../../../include/riis_module.h");
    let line = header
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name) && l.starts_with("#define"))
        .unwrap_or_else(|| panic!("{name} is not in the header"));
    let value = line.split_whitespace().nth(2).unwrap();
    let value = value.trim_end_matches('u');
    u32::from_str_radix(value.trim_start_matches("0x"), 16).unwrap()
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

// ------------------------------------------------------------- the tests

#[test]
fn notification_bits_match_the_header() {
    for n in RequestNotification::DETERMINISTIC
        .into_iter()
        .chain(RequestNotification::NONDETERMINISTIC)
    {
        assert_eq!(
            n.bit(),
            abi_bit(&format!("RIIS_RQ_{}", snake(n.name()))),
            "{n}"
        );
        assert_eq!(RequestNotification::from_bit(n.bit()), Some(n));
    }
    for n in GlobalNotification::ALL {
        let name = match n {
            GlobalNotification::RscaQuery => "RSCA_QUERY".to_owned(),
            other => snake(other.name()),
        };
        assert_eq!(n.bit(), abi_bit(&format!("RIIS_GL_{name}")), "{n}");
        assert_eq!(GlobalNotification::from_bit(n.bit()), Some(n));
    }
    assert_eq!(RequestNotification::from_bit(0x1000), None);
    let set = RequestNotifications::NONE
        .with(RequestNotification::BeginRequest)
        .with(RequestNotification::SendResponse);
    assert_eq!(set.bits(), 0x2000_0001);
    assert_eq!(
        (RequestNotification::BeginRequest | RequestNotification::SendResponse),
        set
    );
    assert!(set.contains(RequestNotification::SendResponse));
    assert_eq!(
        RequestNotifications::from_bits_truncate(0x0000_1001).bits(),
        1
    );
    assert!(RequestNotification::EndRequest.has_post_event());
    assert!(!RequestNotification::MapPath.has_post_event());
    let globals = GlobalNotification::PreBeginRequest | GlobalNotification::HealthCheck;
    assert_eq!(globals.bits(), 0x120);
    assert_eq!(GlobalNotifications::from_bits_truncate(0x1).bits(), 0);
}

#[test]
fn handles_meant_for_other_threads_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CompletionHandle>();
    send_sync::<Logger>();
    send_sync::<ModuleError>();
}

#[test]
fn statuses_and_constants_match_the_abi() {
    use RequestNotificationStatus as S;
    for s in [S::Continue, S::Pending, S::FinishRequest] {
        assert_eq!(S::from_raw(s.raw()), Some(s));
    }
    assert_eq!(S::Continue.raw(), abi::STATUS_CONTINUE);
    assert_eq!(S::Pending.raw(), abi::STATUS_PENDING);
    assert_eq!(S::FinishRequest.raw(), abi::STATUS_FINISH_REQUEST);
    assert_eq!(S::from_raw(3), None);
    assert_eq!(GlobalNotificationStatus::Handled.raw(), abi::GLOBAL_HANDLED);
    assert_eq!(
        GlobalNotificationStatus::from_raw(abi::GLOBAL_CONTINUE),
        Some(GlobalNotificationStatus::Continue)
    );
    assert_eq!(ContextScope::Site.raw(), abi::SCOPE_SITE);
    assert_eq!(ContextScope::Connection.raw(), abi::SCOPE_CONNECTION);
    assert_eq!(LogLevel::Debug.raw(), abi::LOG_DEBUG);
    let flags = SendFlags {
        more_data: true,
        disconnect: true,
    };
    assert_eq!(SendFlags::from_bits(flags.bits()), flags);
    let execute = ExecuteFlags {
        buffer_response: true,
        disable_custom_error: true,
        same_url: true,
        no_headers: true,
    };
    assert_eq!(execute.bits(), 0x39);
    for p in [
        Priority::First,
        Priority::High,
        Priority::Medium,
        Priority::Low,
        Priority::Last,
    ] {
        assert_eq!(Priority::from_alias(&p.alias().to_lowercase()), Some(p));
        assert_eq!(crate::registration::c_alias(p).to_str().unwrap(), p.alias());
    }
    assert!(Priority::First > Priority::Last);
    // The shared notification crate carries the ABI's numbers.
    for (status, raw) in [
        (RequestNotificationStatus::Continue, abi::STATUS_CONTINUE),
        (RequestNotificationStatus::Pending, abi::STATUS_PENDING),
        (
            RequestNotificationStatus::FinishRequest,
            abi::STATUS_FINISH_REQUEST,
        ),
    ] {
        assert_eq!(status.raw(), raw);
    }
    assert_eq!(
        GlobalNotificationStatus::Continue.raw(),
        abi::GLOBAL_CONTINUE
    );
    assert_eq!(GlobalNotificationStatus::Handled.raw(), abi::GLOBAL_HANDLED);
    assert_eq!(ModuleError::new("x").failure_code(), abi::hr::E_FAIL);
    assert_eq!(
        ModuleError::with_hresult("x", ModuleError::E_INVALIDARG).failure_code(),
        abi::hr::E_INVALIDARG
    );
    assert_eq!(
        ModuleError::with_hresult("x", 1).failure_code(),
        abi::hr::E_FAIL
    );
}

/// The module the request tests drive.
#[derive(Default)]
struct Probe {
    reading: bool,
}

const BEGIN: u32 = 0x1;
const SEND: u32 = 0x2000_0000;
const CUSTOM: u32 = 0x1000_0000;
const END: u32 = 0x800;

#[derive(Default)]
struct Counter(AtomicUsize);

struct Dropped(Arc<AtomicUsize>);
impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static DROPS: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
    static HANDLE: RefCell<Option<CompletionHandle>> = const { RefCell::new(None) };
}

impl HttpModule for Probe {
    fn on_begin_request(&mut self, ctx: &mut HttpContext) -> RequestNotificationStatus {
        match ctx.request().url() {
            "/hello" => {
                let r = ctx.response_mut();
                r.set_status(201, "Made").unwrap();
                r.set_header("X-A", "1").unwrap();
                r.append_header("X-A", "2").unwrap();
                r.write("hello ").unwrap();
                r.write(b"world").unwrap();
                assert_eq!(r.header("x-a"), Some("1, 2"));
                assert_eq!(r.status(), 201);
                RequestNotificationStatus::FinishRequest
            }
            "/panic" => panic!("boom"),
            "/read" => {
                self.reading = true;
                ctx.read_entity_body(8).unwrap();
                assert!(ctx.read_data().is_empty());
                RequestNotificationStatus::Pending
            }
            "/delivered" => {
                ctx.on_response_delivered(|delivery| {
                    DELIVERED.lock().unwrap().push(delivery);
                })
                .unwrap();
                RequestNotificationStatus::Continue
            }
            "/duplex" => {
                self.reading = true;
                ctx.enable_full_duplex().unwrap();
                HANDLE.with(|h| *h.borrow_mut() = Some(ctx.completion_handle()));
                ctx.read_entity_body(8).unwrap();
                RequestNotificationStatus::Pending
            }
            "/indicate-early" => {
                let handle = ctx.completion_handle();
                handle
                    .indicate_completion(RequestNotificationStatus::FinishRequest)
                    .unwrap();
                assert!(handle
                    .indicate_completion(RequestNotificationStatus::Continue)
                    .is_err());
                RequestNotificationStatus::Pending
            }
            "/post-early" => {
                ctx.completion_handle().post_completion(5).unwrap();
                RequestNotificationStatus::Pending
            }
            "/later" => {
                HANDLE.with(|h| *h.borrow_mut() = Some(ctx.completion_handle()));
                RequestNotificationStatus::Pending
            }
            "/pending-nothing" => {
                ctx.response_mut().write("partial").unwrap();
                RequestNotificationStatus::Pending
            }
            "/contexts" => {
                let site = ctx
                    .module_context_or_insert_with(ContextScope::Site, Counter::default)
                    .unwrap();
                site.0.fetch_add(1, Ordering::SeqCst);
                let again = ctx.module_context::<Counter>(ContextScope::Site).unwrap();
                assert!(Arc::ptr_eq(&site, &again));
                assert_eq!(again.0.load(Ordering::SeqCst), 1);
                assert!(ctx.module_context::<String>(ContextScope::Site).is_none());

                let drops = DROPS.with(|d| d.clone());
                ctx.set_request_context(Dropped(drops.clone())).unwrap();
                assert!(ctx.request_context::<Dropped>().is_some());
                // Replacing drops the old value.
                ctx.set_request_context(vec![1u8, 2]).unwrap();
                assert_eq!(drops.load(Ordering::SeqCst), 1);
                assert!(ctx.request_context::<Dropped>().is_none());
                ctx.request_context_mut::<Vec<u8>>().unwrap().push(3);
                assert_eq!(ctx.take_request_context::<Vec<u8>>(), Some(vec![1, 2, 3]));
                assert!(ctx.request_context::<Vec<u8>>().is_none());
                // Left for the end of the request.
                ctx.set_request_context(Dropped(drops)).unwrap();
                RequestNotificationStatus::Continue
            }
            "/raise" => {
                let mut payload = 41u32;
                ctx.raise_custom_notification_with("probe.add", &mut payload)
                    .unwrap();
                assert_eq!(payload, 42);
                RequestNotificationStatus::Continue
            }
            "/misc" => {
                let req = ctx.request();
                assert_eq!(req.method(), "GET");
                assert_eq!(req.query_string(), "a=1");
                assert_eq!(req.header("host"), Some("example.test"));
                assert_eq!(req.header("x-bad"), None);
                assert_eq!(req.header_names(), vec!["Host"]);
                assert_eq!(req.http_version(), (1, 1));
                assert_eq!(req.remote_address(), Some("[::1]:50000".parse().unwrap()));
                assert_eq!(req.local_address(), Some("127.0.0.1:8080".parse().unwrap()));
                assert_eq!(req.remaining_entity_bytes(), None);
                assert_eq!(req.client_certificate(), Some(FAKE_CERTIFICATE));
                assert!(req.client_certificate_negotiated());
                assert_eq!(ctx.site_name(), "Default");
                assert_eq!(ctx.request_id(), 42);
                assert_eq!(ctx.map_path("/a"), Some(std::path::Path::new("/srv/www/a")));
                assert_eq!(
                    ctx.virtual_directory(),
                    Some(("/pictures", std::path::Path::new("/srv/pictures")))
                );
                assert_eq!(ctx.location_path(), Some("/pictures/thumbs"));
                let resp = ctx.response_mut();
                assert!(resp.set_trailer("grpc-status", "0", true).is_ok());
                assert!(resp.set_trailer("content-length", "1", true).is_err());
                assert_eq!(resp.trailer("grpc-status"), Some("0"));
                assert!(resp.delete_trailer("grpc-status").is_ok());
                assert_eq!(ctx.server_variable("REMOTE_ADDR"), Some("127.0.0.1"));
                assert_eq!(ctx.handler_name(), None);
                assert_eq!(ctx.config_value(Section(3), "greeting"), Some("hi"));
                let stats = ctx.current_execution_stats().unwrap();
                assert_eq!(stats.notification, RequestNotification::BeginRequest);
                assert_eq!(stats.module, "Test");
                let user = ctx.user().unwrap();
                assert_eq!(user.name(), "alice");
                assert!(user.is_in_role("admin") && !user.is_in_role("guest"));
                assert!(ctx.request_mut().set_header("X\0", "v").is_err());
                ctx.request_mut().set_method("POST").unwrap();
                assert_eq!(ctx.request().method(), "POST");

                // A child released unexecuted, one executed.
                let child = ctx.clone_context().unwrap();
                drop(child);
                let child = ctx.clone_context_with_url("/child").unwrap();
                assert_eq!(child.request().url(), "/child");
                ctx.execute_request(child, ExecuteFlags::default()).unwrap();

                ctx.response_mut()
                    .write_file_path_range("/tmp/f", 1, 2)
                    .unwrap();
                ctx.response_mut().redirect("/elsewhere", 301).unwrap();
                ctx.log(LogLevel::Info, "misc done");
                RequestNotificationStatus::Continue
            }
            _ => RequestNotificationStatus::Continue,
        }
    }

    fn on_end_request(&mut self, _ctx: &mut HttpContext) -> RequestNotificationStatus {
        RequestNotificationStatus::Continue
    }

    fn on_send_response(
        &mut self,
        ctx: &mut HttpContext,
        provider: &mut SendResponseProvider,
    ) -> RequestNotificationStatus {
        if ctx.request().url() == "/send-pending" {
            // SendResponse cannot wait: the server takes this as Continue.
            return RequestNotificationStatus::Pending;
        }
        // ABI 1.4's calls reach the server (the mock defers below 4 bytes).
        assert!(!provider.is_flush());
        assert!(provider.defer_after(ctx, 2).unwrap());
        assert!(!provider.defer_after(ctx, 1024).unwrap());
        if provider.headers_being_sent() {
            ctx.response_mut().set_header("X-Sent", "yes").unwrap();
            provider
                .set_flags(SendFlags {
                    more_data: false,
                    disconnect: true,
                })
                .unwrap();
        }
        RequestNotificationStatus::Continue
    }

    fn on_custom_request_notification(
        &mut self,
        _ctx: &mut HttpContext,
        provider: &mut CustomNotification,
    ) -> RequestNotificationStatus {
        if provider.notification_type() == "probe.add" {
            assert!(provider.data().is_null());
            assert!(provider.payload::<String>().is_none());
            *provider.payload::<u32>().unwrap() += 1;
        }
        RequestNotificationStatus::Continue
    }

    fn on_async_completion(
        &mut self,
        ctx: &mut HttpContext,
        notification: RequestNotification,
        _is_post: bool,
        completion: &CompletionInfo,
    ) -> RequestNotificationStatus {
        assert_eq!(notification, RequestNotification::BeginRequest);
        if completion.operation == CompletedOperation::Write {
            // The read is still under way (full duplex): a second one is
            // refused, and leaves the first alone.
            assert!(ctx.read_data().is_empty());
            assert!(ctx.read_entity_body(16).is_err());
            return RequestNotificationStatus::Pending;
        }
        if self.reading {
            let data = ctx.read_data().to_vec();
            assert_eq!(completion.bytes as usize, data.len());
            ctx.response_mut().write(&data).unwrap();
        }
        RequestNotificationStatus::FinishRequest
    }
}

fn probe_registration() -> Box<MockRegistration> {
    fn register(
        version: u32,
        registration: &mut ModuleRegistration,
        server: &ServerInfo,
    ) -> Result<(), ModuleError> {
        assert_eq!(version, 10);
        assert_eq!(registration.name(), "Test");
        assert_eq!(registration.id(), 7);
        assert_eq!(server.software, "riis/test");
        assert_eq!(registration.declare_section("probe")?.id(), 3);
        let keyed = registration.declare_section_with_keys("probe_keys", &["enabled", "token"])?;
        assert_eq!(keyed.id(), 3);
        registration.set_request_notifications(
            Probe::default,
            RequestNotification::BeginRequest
                | RequestNotification::SendResponse
                | RequestNotification::CustomNotification,
            RequestNotification::EndRequest.into(),
        )?;
        registration.set_priority_for_request_notification(
            RequestNotification::BeginRequest,
            Priority::High,
        )
    }
    let (code, registration) = register_with(register);
    assert_eq!(code, 0);
    assert_eq!(registration.notifications, 0x3000_0001);
    assert_eq!(registration.post, END);
    assert_eq!(registration.priorities, vec![(1, "HIGH".to_owned())]);
    assert_eq!(
        registration.sections,
        vec!["probe".to_owned(), "probe_keys".to_owned()]
    );
    assert_eq!(
        registration.section_keys,
        vec![(3, vec!["enabled".to_owned(), "token".to_owned()])]
    );
    registration
}

#[test]
fn a_request_reaches_the_module_and_its_response() {
    let registration = probe_registration();
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/hello", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_FINISH_REQUEST
    );
    let mut provider = MockProvider::of(abi::PROVIDER_SEND_RESPONSE);
    assert_eq!(
        instance.notify(&req, SEND, false, &mut provider),
        abi::STATUS_CONTINUE
    );
    assert_eq!(provider.flags, abi::SEND_FLAG_DISCONNECT);
    assert_eq!(
        instance.notify(&req, END, true, std::ptr::null_mut()),
        abi::STATUS_CONTINUE
    );
    // A provider of the wrong kind is not handed to the module.
    provider.kind = abi::PROVIDER_MAP_PATH;
    assert_eq!(
        instance.notify(&req, SEND, false, &mut provider),
        abi::STATUS_CONTINUE
    );
    let mock = req.mock();
    assert_eq!(mock.status, 201);
    assert_eq!(mock.reason.as_deref(), Some("Made"));
    assert_eq!(mock.body, b"hello world");
    assert_eq!(
        header_of(&mock.response_headers, "X-Sent").as_deref(),
        Some("yes")
    );
    drop(instance);
    terminate(&registration);
}

#[test]
fn a_panic_fails_the_request_with_500_and_is_not_called_again() {
    let registration = probe_registration();
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/panic", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_FINISH_REQUEST
    );
    {
        let mock = req.mock();
        assert_eq!(mock.status, 500);
        assert_eq!(mock.error, abi::hr::E_FAIL);
        assert_eq!(
            mock.description.as_deref(),
            Some("module Test panicked in BeginRequest: boom")
        );
        assert!(mock
            .logs
            .iter()
            .any(|l| l.contains("panicked in BeginRequest")));
    }
    // Not called again: the /panic URL would panic again.
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_CONTINUE
    );
    // With headers out, the response is cut short: the connection is
    // reset, so it cannot look whole.
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/panic", "");
    req.mock().headers_sent = true;
    assert_eq!(
        instance.notify(&req, BEGIN, true, std::ptr::null_mut()),
        abi::STATUS_CONTINUE
    );
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_FINISH_REQUEST
    );
    assert!(req.mock().reset);
    assert_eq!(req.mock().status, 200);
}

#[test]
fn factory_errors_and_panics_become_failure_hresults() {
    fn failing(_: u32, r: &mut ModuleRegistration, _: &ServerInfo) -> Result<(), ModuleError> {
        struct Failing;
        impl HttpModuleFactory for Failing {
            fn get_http_module(&self) -> Result<Box<dyn HttpModule>, ModuleError> {
                Err(ModuleError::with_hresult("no", ModuleError::E_OUTOFMEMORY))
            }
        }
        r.set_request_notifications(
            Failing,
            RequestNotification::BeginRequest.into(),
            RequestNotifications::NONE,
        )
    }
    fn panicking(_: u32, r: &mut ModuleRegistration, _: &ServerInfo) -> Result<(), ModuleError> {
        r.set_request_notifications(
            || -> Probe { panic!("factory boom") },
            RequestNotification::BeginRequest.into(),
            RequestNotifications::NONE,
        )
    }
    let (code, registration) = register_with(failing);
    assert_eq!(code, 0);
    assert_eq!(
        Instance::new(&registration).err(),
        Some(abi::hr::E_OUTOFMEMORY)
    );
    terminate(&registration);
    let (code, registration) = register_with(panicking);
    assert_eq!(code, 0);
    assert_eq!(Instance::new(&registration).err(), Some(abi::hr::E_FAIL));
    assert!(SERVER_LOG
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("panicked in its factory: factory boom")));
    terminate(&registration);
}

#[test]
fn registration_errors_and_panics_become_failure_hresults() {
    fn erring(_: u32, _: &mut ModuleRegistration, _: &ServerInfo) -> Result<(), ModuleError> {
        Err(ModuleError::with_hresult(
            "bad config",
            ModuleError::E_INVALIDARG,
        ))
    }
    fn panicking(_: u32, _: &mut ModuleRegistration, _: &ServerInfo) -> Result<(), ModuleError> {
        panic!("register boom")
    }
    assert_eq!(register_with(erring).0, abi::hr::E_INVALIDARG);
    assert_eq!(register_with(panicking).0, abi::hr::E_FAIL);
    // A server of another major version is refused.
    let old = riis_server {
        size: std::mem::size_of::<riis_server>() as u32,
        abi_version: 2 << 16,
        software: std::ptr::null(),
        api: &API,
    };
    let mut registration = MockRegistration::default();
    let raw: *mut MockRegistration = &mut registration;
    // SAFETY: valid arguments.
    let code = unsafe { register_module(10, raw.cast(), &old, erring) };
    assert_eq!(code, abi::hr::E_REVISION_MISMATCH);
}

crate::module_entry!(
    /// An in-process entry point, as a server binary would define it.
    probe_entry,
    entry_register
);

fn entry_register(_: u32, r: &mut ModuleRegistration, _: &ServerInfo) -> Result<(), ModuleError> {
    r.set_request_notifications(
        Probe::default,
        RequestNotification::BeginRequest.into(),
        RequestNotifications::NONE,
    )
}

#[test]
fn module_entry_makes_a_register_module_function() {
    let entry: abi::riis_register_module_fn = probe_entry;
    let mut registration = MockRegistration {
        name: CString::new("Entry").unwrap(),
        ..Default::default()
    };
    let raw: *mut MockRegistration = &mut registration;
    // SAFETY: valid arguments, as the server passes them.
    assert_eq!(unsafe { entry(10, raw.cast(), &SERVER.0) }, 0);
    assert_eq!(registration.notifications, BEGIN);
    terminate(&registration);
}

#[test]
fn an_asynchronous_read_exposes_the_bytes_on_completion() {
    let registration = probe_registration();
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/read", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_PENDING
    );
    let (buffer, capacity) = req.mock().read.unwrap();
    assert_eq!(capacity, 8);
    // The server reads into the buffer, then completes.
    // SAFETY: the buffer the SDK allocated, `capacity` bytes.
    unsafe { std::ptr::copy_nonoverlapping(b"body".as_ptr(), buffer.cast::<u8>(), 4) };
    assert_eq!(
        instance.complete(&req, BEGIN, 4, abi::OPERATION_READ),
        abi::STATUS_FINISH_REQUEST
    );
    assert_eq!(req.mock().body, b"body");
    assert_eq!(req.mock().allocations.len(), 1);
}

static DELIVERED: Mutex<Vec<crate::ResponseDelivery>> = Mutex::new(Vec::new());

/// The watcher goes to the server as a C function and data, which the
/// server calls once, later, from another thread.
#[test]
fn a_delivery_watcher_is_called_through_the_abi_from_another_thread() {
    let registration = probe_registration();
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/delivered", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_CONTINUE
    );
    drop(instance);
    let (delivered, data) = req.mock().delivery.take().unwrap();
    assert!(DELIVERED.lock().unwrap().is_empty());
    std::thread::spawn(move || {
        // SAFETY: the pair the SDK gave, called once, as the server does.
        unsafe { delivered(data as *mut c_void, 1234, 1) }
    })
    .join()
    .unwrap();
    assert_eq!(
        *DELIVERED.lock().unwrap(),
        [crate::ResponseDelivery {
            body_bytes: 1234,
            whole: true
        }]
    );
}

#[test]
fn in_full_duplex_a_flush_completes_while_the_read_stays_under_way() {
    let registration = probe_registration();
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/duplex", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_PENDING
    );
    assert!(req.mock().full_duplex);
    let (buffer, _) = req.mock().read.unwrap();
    // The flush's completion: no bytes read yet (the module checks).
    assert_eq!(
        instance.complete(&req, BEGIN, 5, abi::OPERATION_WRITE),
        abi::STATUS_PENDING
    );
    // Its last completion handle goes: the read still completes the wait
    // (nothing is posted to fail the request).
    let handle = HANDLE.with(|h| h.borrow_mut().take()).unwrap();
    std::thread::spawn(move || drop(handle)).join().unwrap();
    assert!(req.mock().posted.is_empty());
    // The module's SendResponse (of its flush, say) comes inside: its
    // status is not the module's, and the read stays under way.
    let mut provider = MockProvider::of(abi::PROVIDER_MAP_PATH);
    assert_eq!(
        instance.notify(&req, SEND, false, &mut provider),
        abi::STATUS_CONTINUE
    );
    // SAFETY: the buffer the SDK allocated, 8 bytes.
    unsafe { std::ptr::copy_nonoverlapping(b"body".as_ptr(), buffer.cast::<u8>(), 4) };
    assert_eq!(
        instance.complete(&req, BEGIN, 4, abi::OPERATION_READ),
        abi::STATUS_FINISH_REQUEST
    );
    assert_eq!(req.mock().body, b"body");
}

#[test]
fn completion_handles_deliver_early_signals_and_fail_after_the_request() {
    let registration = probe_registration();

    // Indicated during the call: the same as returning the status.
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/indicate-early", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_FINISH_REQUEST
    );
    assert!(req.mock().indicated.is_empty());

    // Posted during the call: posted by the trampoline, then Pending.
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/post-early", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_PENDING
    );
    assert_eq!(req.mock().posted, vec![5]);

    // After the call, from another thread: straight to the server.
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/later", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_PENDING
    );
    let handle = HANDLE.with(|h| h.borrow_mut().take()).unwrap();
    let sent = handle.clone();
    std::thread::spawn(move || sent.indicate_completion(RequestNotificationStatus::Continue))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(req.mock().indicated, vec![abi::STATUS_CONTINUE]);
    assert!(handle
        .indicate_completion(RequestNotificationStatus::Pending)
        .is_err());
    // Disposed: the handle no longer reaches the server.
    drop(instance);
    let err = handle.post_completion(1).unwrap_err();
    assert_eq!(err.hresult, ModuleError::E_INVALID_STATE);
    assert!(req.mock().posted.is_empty());
}

/// As in the in-process API: Pending with no operation and no completion
/// handle fails the request with an empty 500 at once; Pending whose last
/// handle is dropped without a signal fails it when the completion posted
/// for that comes back, without calling the module.
#[test]
fn a_request_nothing_can_resume_fails_with_500() {
    let registration = probe_registration();

    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/pending-nothing", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_FINISH_REQUEST
    );
    assert_eq!(req.mock().status, 500);
    assert!(req.mock().body.is_empty(), "the partial body is dropped");

    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/later", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_PENDING
    );
    let handle = HANDLE.with(|h| h.borrow_mut().take()).unwrap();
    let copy = handle.clone();
    drop(handle);
    assert!(req.mock().posted.is_empty(), "a copy is still alive");
    std::thread::spawn(move || drop(copy)).join().unwrap();
    assert_eq!(req.mock().posted, vec![0]);
    assert_eq!(req.mock().status, 200);
    assert_eq!(
        instance.complete(&req, BEGIN, 0, abi::OPERATION_POSTED),
        abi::STATUS_FINISH_REQUEST
    );
    assert_eq!(req.mock().status, 500);
}

/// Pending from SendResponse (or the other notifications that come inside
/// another call) is Continue, as the server takes it from a module of its
/// own: it does not fail the request.
#[test]
fn pending_from_send_response_is_continue() {
    let registration = probe_registration();
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/send-pending", "");
    let mut provider = MockProvider::of(abi::PROVIDER_SEND_RESPONSE);
    assert_eq!(
        instance.notify(&req, SEND, false, &mut provider),
        abi::STATUS_CONTINUE
    );
    assert_ne!(req.mock().status, 500);
    drop(instance);
    terminate(&registration);
}

#[test]
fn module_contexts_round_trip_and_are_dropped_once() {
    let registration = probe_registration();
    let instance = Instance::new(&registration).unwrap();
    let drops = DROPS.with(|d| d.clone());
    let before = drops.load(Ordering::SeqCst);
    let req = Request::new("/contexts", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_CONTINUE
    );
    assert_eq!(drops.load(Ordering::SeqCst), before + 1);
    drop(instance);
    drop(req);
    assert_eq!(drops.load(Ordering::SeqCst), before + 2);
}

#[test]
fn typed_custom_notifications_reach_receivers_of_this_sdk() {
    let registration = probe_registration();
    let raiser = Instance::new(&registration).unwrap();
    let receiver = Rc::new(Instance::new(&registration).unwrap());
    let receiver_req = Rc::new(Request::new("/other", ""));
    let (r, rq) = (receiver.clone(), receiver_req.clone());
    CUSTOM_HOOK.with(|h| {
        *h.borrow_mut() = Some(Box::new(move |name: &str, data: *mut c_void| {
            let mut provider = MockProvider {
                kind: abi::PROVIDER_CUSTOM,
                type_name: CString::new(name).unwrap(),
                data,
                headers_being_sent: false,
                flags: 0,
            };
            r.notify(&rq, CUSTOM, false, &mut provider);
        }))
    });
    let req = Request::new("/raise", "");
    assert_eq!(
        raiser.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_CONTINUE
    );
    assert_eq!(req.mock().raised, vec![("probe.add".to_owned(), true)]);
    CUSTOM_HOOK.with(|h| h.borrow_mut().take());
}

use std::rc::Rc;

#[test]
fn context_accessors_and_invalid_text() {
    let registration = probe_registration();
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/misc", "a=1");
    req.mock().bad_utf8_header = true;
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_CONTINUE
    );
    let mock = req.mock();
    assert_eq!(mock.executed, 1);
    assert_eq!(mock.released, 1);
    assert!(mock.logs.contains(&"child /child".to_owned()));
    assert!(mock.logs.contains(&"misc done".to_owned()));
    assert_eq!(mock.status, 301);
    assert_eq!(mock.body, b"[file /tmp/f 1+2]");
}

/// A global module for the global trampolines.
struct Global;

impl GlobalModule for Global {
    fn on_global_pre_begin_request(&self, ctx: &mut HttpContext) -> GlobalNotificationStatus {
        if ctx.request().url() == "/global-panic" {
            panic!("global boom");
        }
        ctx.request_mut().set_url("/rewritten").unwrap();
        assert!(ctx.post_completion(1).is_err());
        assert!(ctx
            .completion_handle()
            .indicate_completion(RequestNotificationStatus::Continue)
            .is_err());
        GlobalNotificationStatus::Handled
    }
    fn on_global_application_start(&self, app: &Application<'_>) -> GlobalNotificationStatus {
        assert_eq!(app.site_name, "Default");
        assert_eq!(app.physical_root, std::path::Path::new("/srv/www"));
        // The application's container: stored once, read back, and the
        // site slot the requests read.
        assert!(app.module_context::<AtomicUsize>().is_none());
        let state = app.set_module_context(AtomicUsize::new(7)).unwrap();
        let refused = app.set_module_context(AtomicUsize::new(8)).unwrap_err();
        assert_eq!(refused.hresult, abi::hr::E_ALREADY_ASSIGNED as u32);
        let read = app.module_context::<AtomicUsize>().unwrap();
        assert!(Arc::ptr_eq(&state, &read));
        assert!(app.module_context::<String>().is_none());
        GlobalNotificationStatus::Handled
    }
    fn on_global_trace_event(&self, event: &TraceEvent<'_>) -> GlobalNotificationStatus {
        assert_eq!(event.notification, Some(RequestNotification::BeginRequest));
        assert_eq!(
            event.phase,
            TracePhase::ModuleEnd {
                elapsed: std::time::Duration::from_micros(5)
            }
        );
        GlobalNotificationStatus::Handled
    }
    fn on_global_cache_operation(&self, op: &CacheOperation<'_>) -> GlobalNotificationStatus {
        assert_eq!(
            *op,
            CacheOperation::Add {
                key: "/srv/www/a.txt",
                bytes: 10
            }
        );
        GlobalNotificationStatus::Handled
    }
    fn on_global_configuration_change(&self, path: &std::path::Path) -> GlobalNotificationStatus {
        // The mock's provider answers every file path with this one.
        assert_eq!(path, std::path::Path::new("/srv/www/a.txt"));
        GlobalNotificationStatus::Handled
    }
    fn on_global_rsca_query(&self, query: &mut RscaQuery<'_>) -> GlobalNotificationStatus {
        assert_eq!(
            (query.function(), query.parameters()),
            ("status", "verbose")
        );
        query.write("cache entries: 3\n").unwrap();
        let refused = query.write("refuse me").unwrap_err();
        assert_eq!(refused.hresult, ModuleError::E_INVALIDARG);
        GlobalNotificationStatus::Handled
    }
    fn on_global_custom_notification(
        &self,
        provider: &mut CustomNotification,
    ) -> GlobalNotificationStatus {
        assert_eq!(provider.notification_type(), "g");
        assert!(provider.payload::<u32>().is_none());
        GlobalNotificationStatus::Handled
    }
}

#[test]
fn global_modules_are_dispatched_and_contained() {
    fn register(_: u32, r: &mut ModuleRegistration, _: &ServerInfo) -> Result<(), ModuleError> {
        r.set_global_notifications(
            Global,
            GlobalNotification::PreBeginRequest
                | GlobalNotification::ApplicationStart
                | GlobalNotification::TraceEvent
                | GlobalNotification::CacheOperation
                | GlobalNotification::ConfigurationChange
                | GlobalNotification::CustomNotification
                | GlobalNotification::RscaQuery,
        )?;
        r.set_priority_for_global_notification(GlobalNotification::PreBeginRequest, Priority::First)
    }
    let (code, registration) = register_with(register);
    assert_eq!(code, 0);
    assert_eq!(registration.global_notifications, 0x7300 | 0x10 | 0x40);
    let global = registration.global.unwrap();
    let call = |bit: u32, provider: *mut c_void| {
        // SAFETY: the global record the SDK registered.
        unsafe {
            ((*global).on_global_notification.unwrap())((*global).user_data, bit, provider.cast())
        }
    };
    // The mock's global provider for PreBeginRequest is the context itself.
    let req = Request::new("/", "");
    assert_eq!(call(0x100, req.ctx().cast()), abi::GLOBAL_HANDLED);
    assert_eq!(s(req.mock().url.as_ptr()), "/rewritten");
    let dummy = std::ptr::dangling_mut::<c_void>();
    assert_eq!(call(0x200, dummy), abi::GLOBAL_HANDLED);
    // What ApplicationStart stored is what the site's requests read.
    // SAFETY: the site scope does not touch the context.
    let slot = unsafe { module_context(std::ptr::null_mut(), abi::SCOPE_SITE) };
    let site = crate::context::shared_in_slot::<AtomicUsize>(slot).unwrap();
    assert_eq!(site.load(Ordering::SeqCst), 7);
    assert_eq!(call(0x2000, dummy), abi::GLOBAL_HANDLED);
    assert_eq!(call(0x10, dummy), abi::GLOBAL_HANDLED);
    assert_eq!(call(0x4000, dummy), abi::GLOBAL_HANDLED);
    assert_eq!(call(0x40, dummy), abi::GLOBAL_HANDLED);
    assert_eq!(call(0x1000, dummy), abi::GLOBAL_HANDLED);
    assert_eq!(*RSCA_ANSWER.lock().unwrap(), "cache entries: 3\n");
    // Not registered in the trait: the default.
    assert_eq!(call(0x20, std::ptr::null_mut()), abi::GLOBAL_CONTINUE);
    // A panic: logged, Continue.
    let req = Request::new("/global-panic", "");
    assert_eq!(call(0x100, req.ctx().cast()), abi::GLOBAL_CONTINUE);
    assert!(SERVER_LOG
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("global module Test panicked in PreBeginRequest: global boom")));
    terminate(&registration);
}

// ------------------------------------------------------ the example module

#[path = "../examples/sdk_hello.rs"]
mod sdk_hello;

fn example_registration() -> Box<MockRegistration> {
    let mut registration = Box::new(MockRegistration {
        name: CString::new("SdkHello").unwrap(),
        ..Default::default()
    });
    let raw: *mut MockRegistration = &mut *registration;
    // SAFETY: the exported entry point, with valid arguments.
    let code = unsafe { sdk_hello::RegisterModule(10, raw.cast(), &SERVER.0) };
    assert_eq!(code, 0);
    assert_eq!(sdk_hello::riis_module_abi, abi::ABI_VERSION);
    assert_eq!(registration.notifications, BEGIN | SEND);
    registration
}

/// SendResponse with the headers going out.
fn send(instance: &Instance, req: &Request) {
    let mut provider = MockProvider::of(abi::PROVIDER_SEND_RESPONSE);
    assert_eq!(
        instance.notify(req, SEND, false, &mut provider),
        abi::STATUS_CONTINUE
    );
}

fn header(req: &Request, name: &str) -> Option<String> {
    header_of(&req.mock().response_headers, name)
}

#[test]
fn the_example_answers_counts_and_contains_panics() {
    let registration = example_registration();

    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/sdk", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_FINISH_REQUEST
    );
    send(&instance, &req);
    assert_eq!(req.mock().status, 200);
    assert_eq!(req.mock().body, b"hello from a Rust module library\n");
    assert_eq!(header(&req, "Content-Type").as_deref(), Some("text/plain"));
    assert_eq!(header(&req, "X-Module").as_deref(), Some("sdk_hello"));
    assert_eq!(header(&req, "X-Site-Requests").as_deref(), Some("1"));
    drop(instance);
    drop(req);

    // Any other URL: untouched, but counted.
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/other", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_CONTINUE
    );
    send(&instance, &req);
    assert!(req.mock().body.is_empty());
    assert_eq!(header(&req, "X-Module"), None);
    assert_eq!(header(&req, "X-Site-Requests").as_deref(), Some("2"));
    drop(instance);
    drop(req);

    // panic=1: 500, not counted, the instance is not called again.
    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/sdk", "panic=1");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_FINISH_REQUEST
    );
    send(&instance, &req);
    assert_eq!(req.mock().status, 500);
    assert!(req
        .mock()
        .description
        .as_deref()
        .unwrap()
        .starts_with("module SdkHello panicked in BeginRequest: sdk_hello: panic requested"));
    assert_eq!(header(&req, "X-Site-Requests"), None);
    drop(instance);
    drop(req);

    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/sdk", "x=1");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_FINISH_REQUEST
    );
    send(&instance, &req);
    assert_eq!(header(&req, "X-Site-Requests").as_deref(), Some("3"));
    drop(instance);
    drop(req);
    terminate(&registration);
}

#[test]
fn the_example_echoes_the_body_and_completes_from_a_thread() {
    let registration = example_registration();

    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/sdk/echo", "");
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_PENDING
    );
    for part in [&b"hello "[..], b"body", b""] {
        let (buffer, capacity) = req.mock().read.take().expect("a read in flight");
        assert!(capacity >= part.len());
        // SAFETY: the SDK's buffer, `capacity` bytes.
        unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), buffer.cast::<u8>(), part.len()) };
        let status = instance.complete(&req, BEGIN, part.len() as u64, abi::OPERATION_READ);
        let expected = if part.is_empty() {
            abi::STATUS_FINISH_REQUEST
        } else {
            abi::STATUS_PENDING
        };
        assert_eq!(status, expected);
    }
    assert_eq!(req.mock().status, 200);
    assert_eq!(req.mock().body, b"hello body");
    assert_eq!(
        header(&req, "Content-Type").as_deref(),
        Some("application/octet-stream")
    );
    drop(instance);
    drop(req);

    let instance = Instance::new(&registration).unwrap();
    let req = Request::new("/sdk/async", "");
    let before = POSTED.load(Ordering::Acquire);
    assert_eq!(
        instance.notify(&req, BEGIN, false, std::ptr::null_mut()),
        abi::STATUS_PENDING
    );
    while POSTED.load(Ordering::Acquire) == before {
        std::thread::yield_now();
    }
    assert_eq!(req.mock().posted, vec![7]);
    assert_eq!(
        instance.complete(&req, BEGIN, 7, abi::OPERATION_POSTED),
        abi::STATUS_FINISH_REQUEST
    );
    assert_eq!(req.mock().body, b"completed on another thread: 7 bytes\n");
    drop(instance);
    drop(req);
    terminate(&registration);
}

/// A logger kept from registration names the module from any thread, at
/// any time: the server's log source for it goes with each line.
#[test]
fn a_kept_logger_names_the_module_from_its_own_threads() {
    static KEPT: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();
    fn keeping(_: u32, r: &mut ModuleRegistration, server: &ServerInfo) -> Result<(), ModuleError> {
        let _ = KEPT.set(r.logger());
        server
            .logger()
            .log(LogLevel::Info, "registered, says the server's logger");
        r.set_request_notifications(
            Probe::default,
            RequestNotification::BeginRequest.into(),
            RequestNotifications::NONE,
        )
    }
    let (code, registration) = register_with(keeping);
    assert_eq!(code, 0);
    let logger = *KEPT.get().unwrap();
    std::thread::spawn(move || logger.log(LogLevel::Warn, "from a thread of the module's"))
        .join()
        .unwrap();
    let log = SERVER_LOG.lock().unwrap().clone();
    for line in [
        "[source 7] from a thread of the module's",
        "[source 7] registered, says the server's logger",
    ] {
        assert!(log.iter().any(|l| l == line), "{line}: {log:?}");
    }
    terminate(&registration);
}
