//! Tencent's Finance SDK (`libWeWorkFinanceSdk_C.so`, `WeWorkFinanceSdk.dll`), loaded at run time
//! from the path the admin gives: it is proprietary, never shipped with Verbatim and never needed
//! to build it. Only the SDK's documented C functions are used, with their documented
//! signatures; every buffer the SDK hands back is copied out and freed with the SDK's own free
//! function before the call returns.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_ulonglong, c_void};
use std::path::Path;

use libloading::{Library, Symbol};

use crate::error::{Error, ErrorKind, Result};

#[repr(C)]
struct Slice {
    buf: *mut c_char,
    len: c_int,
}

#[repr(C)]
struct MediaData {
    outindexbuf: *mut c_char,
    out_len: c_int,
    data: *mut c_char,
    data_len: c_int,
    is_finish: c_int,
}

type NewSdk = unsafe extern "C" fn() -> *mut c_void;
type Init = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
type DestroySdk = unsafe extern "C" fn(*mut c_void);
type GetChatData =
    unsafe extern "C" fn(*mut c_void, c_ulonglong, c_uint, *const c_char, *const c_char, c_int, *mut Slice) -> c_int;
type DecryptData = unsafe extern "C" fn(*const c_char, *const c_char, *mut Slice) -> c_int;
type GetMediaData =
    unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, *const c_char, *const c_char, c_int, *mut MediaData) -> c_int;
type NewSlice = unsafe extern "C" fn() -> *mut Slice;
type FreeSlice = unsafe extern "C" fn(*mut Slice);
type NewMediaData = unsafe extern "C" fn() -> *mut MediaData;
type FreeMediaData = unsafe extern "C" fn(*mut MediaData);

/// The SDK's error codes, as its header documents them, for messages that say what failed.
fn describe(code: c_int) -> &'static str {
    match code {
        10000 => "bad parameter",
        10001 => "network error or bad corp id / secret",
        10002 => "data could not be decrypted (wrong key?)",
        10003 => "system error",
        10004 => "the key failed to decrypt",
        10005 => "bad sdkfileid",
        10006 => "decryption failed",
        10007 => "no private key for this message's key version",
        10008 => "bad encrypt_key",
        10009 => "IP address not allowed",
        10010 => "data expired",
        10011 => "certificate error",
        _ => "unknown error",
    }
}

fn sdk_error(what: &str, code: c_int) -> Error {
    let kind = if matches!(code, 10002 | 10004 | 10006 | 10008) { ErrorKind::Crypto } else { ErrorKind::Network };
    Error::new(kind, format!("WeCom SDK {what}: error {code} ({})", describe(code)))
}

/// One initialised SDK instance. Calls block (they do network I/O); use from one task at a time.
pub struct Sdk {
    handle: *mut c_void,
    // Function pointers copied out of the library; `_lib` keeps it loaded while they live.
    destroy: DestroySdk,
    get_chat_data: GetChatData,
    decrypt_data: DecryptData,
    get_media_data: GetMediaData,
    new_slice: NewSlice,
    free_slice: FreeSlice,
    new_media: NewMediaData,
    free_media: FreeMediaData,
    timeout_secs: c_int,
    _lib: Library,
}

// The handle is used through `&mut self` or one call at a time; the SDK documents its instance
// as usable from any thread.
unsafe impl Send for Sdk {}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::new(ErrorKind::Rejected, format!("WeCom SDK: {what} contains a NUL byte")))
}

impl Sdk {
    /// Loads the SDK from `path` and initialises it for `corp_id` with the archive `secret`.
    pub fn open(path: &Path, corp_id: &str, secret: &str, timeout_secs: u32) -> Result<Sdk> {
        let fail = |e: libloading::Error| {
            Error::new(ErrorKind::NotConfigured, format!("WeCom SDK {}: cannot load it: {e}", path.display()))
        };
        // SAFETY: loading a library runs its initialisers; the admin names the SDK's own file.
        let lib = unsafe { Library::new(path) }.map_err(fail)?;
        // SAFETY: each symbol is looked up with the signature the SDK's header documents.
        let sdk = unsafe {
            let new_sdk: Symbol<NewSdk> = lib.get(b"NewSdk").map_err(fail)?;
            let init: Symbol<Init> = lib.get(b"Init").map_err(fail)?;
            let destroy: DestroySdk = *lib.get::<DestroySdk>(b"DestroySdk").map_err(fail)?;
            let handle = new_sdk();
            if handle.is_null() {
                return Err(Error::new(ErrorKind::Internal, "WeCom SDK: NewSdk returned nothing"));
            }
            let (corp, secret) = (cstring("corp id", corp_id)?, cstring("secret", secret)?);
            let code = init(handle, corp.as_ptr(), secret.as_ptr());
            if code != 0 {
                destroy(handle);
                return Err(sdk_error("Init", code));
            }
            Sdk {
                handle,
                destroy,
                get_chat_data: *lib.get(b"GetChatData").map_err(fail)?,
                decrypt_data: *lib.get(b"DecryptData").map_err(fail)?,
                get_media_data: *lib.get(b"GetMediaData").map_err(fail)?,
                new_slice: *lib.get(b"NewSlice").map_err(fail)?,
                free_slice: *lib.get(b"FreeSlice").map_err(fail)?,
                new_media: *lib.get(b"NewMediaData").map_err(fail)?,
                free_media: *lib.get(b"FreeMediaData").map_err(fail)?,
                timeout_secs: timeout_secs.min(c_int::MAX as u32) as c_int,
                _lib: lib,
            }
        };
        Ok(sdk)
    }

    /// Runs `call` with a fresh slice and returns the slice's bytes.
    fn with_slice(&self, what: &str, call: impl FnOnce(*mut Slice) -> c_int) -> Result<Vec<u8>> {
        // SAFETY: the slice comes from the SDK's NewSlice and goes back to its FreeSlice; its
        // buffer is read (len bytes) before it is freed.
        unsafe {
            let slice = (self.new_slice)();
            if slice.is_null() {
                return Err(Error::new(ErrorKind::Internal, "WeCom SDK: NewSlice returned nothing"));
            }
            let code = call(slice);
            let bytes = if code == 0 && !(*slice).buf.is_null() && (*slice).len > 0 {
                std::slice::from_raw_parts((*slice).buf as *const u8, (*slice).len as usize).to_vec()
            } else {
                Vec::new()
            };
            (self.free_slice)(slice);
            if code != 0 {
                return Err(sdk_error(what, code));
            }
            Ok(bytes)
        }
    }

    /// `GetChatData`: the records after `seq`, at most `limit` (the SDK's maximum is 1,000), as
    /// the SDK's JSON.
    pub fn chat_data(&self, seq: u64, limit: u32) -> Result<Vec<u8>> {
        let empty = c"";
        // SAFETY: the handle is initialised; strings are NUL-terminated and outlive the call.
        self.with_slice("GetChatData", |slice| unsafe {
            (self.get_chat_data)(self.handle, seq, limit, empty.as_ptr(), empty.as_ptr(), self.timeout_secs, slice)
        })
    }

    /// `DecryptData`: a record's message, with its random key (already opened with the RSA key).
    pub fn decrypt(&self, random_key: &str, encrypted: &str) -> Result<Vec<u8>> {
        let (key, msg) = (cstring("random key", random_key)?, cstring("encrypt_chat_msg", encrypted)?);
        // SAFETY: strings are NUL-terminated and outlive the call.
        self.with_slice("DecryptData", |slice| unsafe { (self.decrypt_data)(key.as_ptr(), msg.as_ptr(), slice) })
    }

    /// `GetMediaData`, called until the SDK says the file is finished: hands each chunk to `sink`.
    pub fn media(&self, sdkfileid: &str, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let file = cstring("sdkfileid", sdkfileid)?;
        let mut index = CString::default();
        let empty = c"";
        loop {
            // SAFETY: the media struct comes from NewMediaData and goes back to FreeMediaData;
            // its buffers are copied out before that.
            let (code, finished, next) = unsafe {
                let media = (self.new_media)();
                if media.is_null() {
                    return Err(Error::new(ErrorKind::Internal, "WeCom SDK: NewMediaData returned nothing"));
                }
                let code = (self.get_media_data)(
                    self.handle,
                    index.as_ptr(),
                    file.as_ptr(),
                    empty.as_ptr(),
                    empty.as_ptr(),
                    self.timeout_secs,
                    media,
                );
                let m = &*media;
                let mut result = Ok(());
                let mut next = CString::default();
                if code == 0 {
                    if !m.data.is_null() && m.data_len > 0 {
                        result = sink(std::slice::from_raw_parts(m.data as *const u8, m.data_len as usize));
                    }
                    if !m.outindexbuf.is_null() {
                        next = CStr::from_ptr(m.outindexbuf).to_owned();
                    }
                }
                let finished = m.is_finish != 0;
                (self.free_media)(media);
                result?;
                (code, finished, next)
            };
            if code != 0 {
                return Err(sdk_error("GetMediaData", code));
            }
            if finished {
                return Ok(());
            }
            if next.as_bytes().is_empty() || next == index {
                return Err(Error::new(ErrorKind::Rejected, "WeCom SDK GetMediaData: no progress in the media file"));
            }
            index = next;
        }
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        // SAFETY: the handle came from NewSdk and is destroyed once.
        unsafe { (self.destroy)(self.handle) }
    }
}
