/*
 * A stand-in for Tencent's WeCom Finance SDK (libWeWorkFinanceSdk_C.so), built by
 * tests/connect_wecom.rs. It exports the SDK's documented C functions with their documented
 * signatures and serves data the test wrote to the folder named by WECOM_STANDIN_DIR:
 *
 *   corp_id, secret   what Init accepts (anything else: error 10001)
 *   chatdata.tsv      one record a line: seq, msgid, publickey_ver, encrypt_random_key,
 *                     encrypt_chat_msg (tab-separated, ascending seq)
 *   media/<sdkfileid> the bytes of a media file, served in chunks of 64 KiB
 *   calls.log         appended by GetChatData: "<seq> <limit>" per call
 *
 * encrypt_chat_msg is hex of "WCM1" + the message JSON, XORed with the record's random key
 * (the test's own scheme; the real SDK uses AES): DecryptData with any other key fails with
 * 10002, as the real SDK does. Not a model of the SDK's cryptography, only of its interface.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct WeWorkFinanceSdk_t { int initialised; } WeWorkFinanceSdk_t;
typedef struct Slice_t { char *buf; int len; } Slice_t;
typedef struct MediaData { char *outindexbuf; int out_len; char *data; int data_len; int is_finish; } MediaData_t;

static char dir_path[4096];

static const char *data_dir(void) {
    const char *d = getenv("WECOM_STANDIN_DIR");
    return d ? d : ".";
}

static char *path_of(const char *name) {
    snprintf(dir_path, sizeof dir_path, "%s/%s", data_dir(), name);
    return dir_path;
}

static char *read_all(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n + 1);
    if (fread(buf, 1, n, f) != (size_t)n) { fclose(f); free(buf); return NULL; }
    fclose(f);
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    if (len) *len = n;
    return buf;
}

static void set_slice(Slice_t *s, const char *text, int len) {
    free(s->buf);
    s->buf = malloc(len + 1);
    memcpy(s->buf, text, len);
    s->buf[len] = 0;
    s->len = len;
}

WeWorkFinanceSdk_t *NewSdk(void) { return calloc(1, sizeof(WeWorkFinanceSdk_t)); }

int Init(WeWorkFinanceSdk_t *sdk, const char *corpid, const char *secret) {
    char *want_corp = read_all(path_of("corp_id"), NULL);
    char *want_secret = read_all(path_of("secret"), NULL);
    int ok = want_corp && want_secret && strcmp(corpid, want_corp) == 0 && strcmp(secret, want_secret) == 0;
    free(want_corp);
    free(want_secret);
    if (!ok) return 10001;
    sdk->initialised = 1;
    return 0;
}

void DestroySdk(WeWorkFinanceSdk_t *sdk) { free(sdk); }

Slice_t *NewSlice(void) { return calloc(1, sizeof(Slice_t)); }
void FreeSlice(Slice_t *s) { if (s) { free(s->buf); free(s); } }
char *GetContentFromSlice(Slice_t *s) { return s->buf; }
int GetSliceLen(Slice_t *s) { return s->len; }

int GetChatData(WeWorkFinanceSdk_t *sdk, unsigned long long seq, unsigned int limit, const char *proxy,
                const char *passwd, int timeout, Slice_t *chatDatas) {
    (void)proxy; (void)passwd; (void)timeout;
    if (!sdk || !sdk->initialised) return 10003;
    if (limit == 0 || limit > 1000) return 10000;
    FILE *log = fopen(path_of("calls.log"), "a");
    if (log) { fprintf(log, "%llu %u\n", seq, limit); fclose(log); }
    FILE *f = fopen(path_of("chatdata.tsv"), "r");
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    len += sprintf(out, "{\"errcode\":0,\"errmsg\":\"ok\",\"chatdata\":[");
    unsigned int n = 0;
    if (f) {
        static char line[1 << 20];
        while (n < limit && fgets(line, sizeof line, f)) {
            unsigned long long s;
            char msgid[256], key[4096], ver[32];
            char *msg = malloc(sizeof line);
            if (sscanf(line, "%llu\t%255s\t%31s\t%4095s\t%s", &s, msgid, ver, key, msg) != 5 || s <= seq) { free(msg); continue; }
            size_t need = strlen(msg) + strlen(key) + 512;
            if (len + need >= cap) { cap = (cap + need) * 2; out = realloc(out, cap); }
            len += sprintf(out + len, "%s{\"seq\":%llu,\"msgid\":\"%s\",\"publickey_ver\":%s,\"encrypt_random_key\":\"%s\",\"encrypt_chat_msg\":\"%s\"}",
                           n ? "," : "", s, msgid, ver, key, msg);
            free(msg);
            n++;
        }
        fclose(f);
    }
    if (len + 4 >= cap) out = realloc(out, len + 4);
    len += sprintf(out + len, "]}");
    set_slice(chatDatas, out, (int)len);
    free(out);
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int DecryptData(const char *encrypt_key, const char *encrypt_msg, Slice_t *msg) {
    size_t hex = strlen(encrypt_msg), klen = strlen(encrypt_key);
    if (hex % 2 || klen == 0) return 10002;
    size_t n = hex / 2;
    char *plain = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(encrypt_msg[2 * i]), lo = hexval(encrypt_msg[2 * i + 1]);
        if (hi < 0 || lo < 0) { free(plain); return 10002; }
        plain[i] = (char)(((hi << 4) | lo) ^ encrypt_key[i % klen]);
    }
    if (n < 4 || memcmp(plain, "WCM1", 4) != 0) { free(plain); return 10002; }
    set_slice(msg, plain + 4, (int)(n - 4));
    free(plain);
    return 0;
}

MediaData_t *NewMediaData(void) { return calloc(1, sizeof(MediaData_t)); }
void FreeMediaData(MediaData_t *m) { if (m) { free(m->outindexbuf); free(m->data); free(m); } }
char *GetOutIndexBuf(MediaData_t *m) { return m->outindexbuf; }
char *GetData(MediaData_t *m) { return m->data; }
int GetIndexLen(MediaData_t *m) { return m->out_len; }
int GetDataLen(MediaData_t *m) { return m->data_len; }
int IsMediaDataFinish(MediaData_t *m) { return m->is_finish; }

int GetMediaData(WeWorkFinanceSdk_t *sdk, const char *indexbuf, const char *sdkFileid, const char *proxy,
                 const char *passwd, int timeout, MediaData_t *media) {
    (void)proxy; (void)passwd; (void)timeout;
    if (!sdk || !sdk->initialised) return 10003;
    char name[4096];
    snprintf(name, sizeof name, "media/%s", sdkFileid);
    FILE *f = fopen(path_of(name), "rb");
    if (!f) return 10005;
    long offset = (indexbuf && *indexbuf) ? atol(indexbuf) : 0;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, offset, SEEK_SET);
    long want = 64 * 1024;
    if (offset + want > size) want = size - offset;
    free(media->data);
    media->data = malloc(want > 0 ? want : 1);
    long got = want > 0 ? (long)fread(media->data, 1, want, f) : 0;
    fclose(f);
    media->data_len = (int)got;
    free(media->outindexbuf);
    media->outindexbuf = malloc(32);
    media->out_len = sprintf(media->outindexbuf, "%ld", offset + got);
    media->is_finish = offset + got >= size;
    return 0;
}
