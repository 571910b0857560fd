/*
 * Copyright (c) 2013 Damien Miller <djm@mindrot.org>
 *
 * Adapted by Will Cosgrove <will@panic.com> for libssh2
 *
 * Permission to use, copy, modify, and distribute this software for any
 * purpose with or without fee is hereby granted, provided that the above
 * copyright notice and this permission notice appear in all copies.
 *
 * THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
 * WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
 * MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR
 * ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
 * WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN
 * ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF
 * OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */

/* $OpenBSD: cipher-chachapoly.c,v 1.8 2016/08/03 05:41:57 djm Exp $ */

#include "libssh2_priv.h"
#include "cipher-chachapoly.h"

static int chachapoly_timingsafe_bcmp(const void *b1, const void *b2, size_t n)
{
    const unsigned char *p1 = b1, *p2 = b2;
    int ret = 0;

    for(; n > 0; n--)
        ret |= *p1++ ^ *p2++;
    return ret != 0;
}

/* hostsync patch (see vendor/README.md in hostsync): with OpenSSL the
   packet body's ChaCha20 and the Poly1305 tag come from OpenSSL, which has
   vectorised code for both; the 4-byte length header keeps the portable
   ChaCha20 (header_ctx). Either part falls back to the portable code when
   OpenSSL does not offer the algorithm (e.g. a FIPS-only provider). */

#if defined(LIBSSH2_OPENSSL) && OPENSSL_VERSION_NUMBER >= 0x30000000L
#define CHACHAPOLY_EVP_MAC 1
#endif

int chachapoly_init(struct chachapoly_ctx *ctx, const unsigned char *key,
                    size_t keylen)
{
#ifdef LIBSSH2_OPENSSL
    ctx->main_evp = NULL;
#ifdef CHACHAPOLY_EVP_MAC
    ctx->mac_ctx = NULL;
#endif
#endif
    if(keylen != (32 + 32)) /* 2 x 256-bit keys */
        return LIBSSH2_ERROR_INVAL;
    chacha_keysetup(&ctx->main_ctx, key, 256);
    chacha_keysetup(&ctx->header_ctx, key + 32, 256);
#ifdef LIBSSH2_OPENSSL
    /* As OpenSSH's cipher-chachapoly-libcrypto.c: the key is set once, the IV
       (block counter || sequence number) per packet. */
    ctx->main_evp = EVP_CIPHER_CTX_new();
    if(ctx->main_evp &&
       EVP_CipherInit(ctx->main_evp, EVP_chacha20(), key, NULL, 1) != 1) {
        EVP_CIPHER_CTX_free(ctx->main_evp);
        ctx->main_evp = NULL;
    }
#ifdef CHACHAPOLY_EVP_MAC
    {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "POLY1305", NULL);
        if(mac) {
            ctx->mac_ctx = EVP_MAC_CTX_new(mac);
            EVP_MAC_free(mac); /* the context holds its own reference */
        }
    }
#endif
#endif
    return 0;
}

void chachapoly_free(struct chachapoly_ctx *ctx)
{
#ifdef LIBSSH2_OPENSSL
    EVP_CIPHER_CTX_free(ctx->main_evp);
    ctx->main_evp = NULL;
#ifdef CHACHAPOLY_EVP_MAC
    EVP_MAC_CTX_free(ctx->mac_ctx);
    ctx->mac_ctx = NULL;
#endif
#else
    (void)ctx;
#endif
}

/* The Poly1305 tag of 'mlen' bytes at 'm' under 'key'. 0 on success. */
static int chachapoly_mac(struct chachapoly_ctx *ctx,
                          unsigned char out[POLY1305_TAGLEN],
                          const unsigned char *m, size_t mlen,
                          const unsigned char key[POLY1305_KEYLEN])
{
#ifdef CHACHAPOLY_EVP_MAC
    if(ctx->mac_ctx) {
        size_t outl = 0;
        if(EVP_MAC_init(ctx->mac_ctx, key, POLY1305_KEYLEN, NULL) != 1 ||
           EVP_MAC_update(ctx->mac_ctx, m, mlen) != 1 ||
           EVP_MAC_final(ctx->mac_ctx, out, &outl, POLY1305_TAGLEN) != 1 ||
           outl != POLY1305_TAGLEN)
            return -1;
        return 0;
    }
#else
    (void)ctx;
#endif
    poly1305_auth(out, m, mlen, key);
    return 0;
}

/* ChaCha20 of the packet body: block counter 1, nonce = sequence number. */
static int chachapoly_body(struct chachapoly_ctx *ctx,
                           const unsigned char seqbuf[8],
                           const unsigned char *src, unsigned char *dest,
                           size_t len)
{
    static const unsigned char one[8] = {
        1, 0, 0, 0, 0, 0, 0, 0  /* NB little-endian */
    };
#ifdef LIBSSH2_OPENSSL
    if(ctx->main_evp) {
        /* OpenSSL's IV: a 32-bit little-endian block counter, then a 96-bit
           nonce. OpenSSH's: a 64-bit counter, then the 64-bit big-endian
           sequence number. A packet is far below 2^32 blocks, so the high
           half of the counter is 0 in both and the key streams are equal. */
        unsigned char iv[16];
        int outl = 0;
        int ok;
        memcpy(iv, one, 8);
        memcpy(iv + 8, seqbuf, 8);
        ok = len <= INT_MAX &&
             EVP_CipherInit(ctx->main_evp, NULL, NULL, iv, 1) == 1 &&
             EVP_CipherUpdate(ctx->main_evp, dest, &outl, src,
                              (int)len) == 1 &&
             (size_t)outl == len;
        ssh2_explicit_zero(iv, sizeof(iv));
        return ok ? 0 : -1;
    }
#endif
    chacha_ivsetup(&ctx->main_ctx, seqbuf, one);
    chacha_encrypt_bytes(&ctx->main_ctx, src, dest, len);
    return 0;
}

/*
 * chachapoly_crypt() operates as following:
 * En/decrypt with header key 'aadlen' bytes from 'src', storing result
 * to 'dest'. The ciphertext here is treated as additional authenticated
 * data for MAC calculation.
 * En/decrypt 'len' bytes at offset 'aadlen' from 'src' to 'dest'. Use
 * POLY1305_TAGLEN bytes at offset 'len'+'aadlen' as the authentication
 * tag. This tag is written on encryption and verified on decryption.
 */
int chachapoly_crypt(struct chachapoly_ctx *ctx, libssh2_uint64_t seqnr,
                     unsigned char *dest, const unsigned char *src, size_t len,
                     size_t aadlen, int do_encrypt)
{
    unsigned char seqbuf[8];
    unsigned char expected_tag[POLY1305_TAGLEN], poly_key[POLY1305_KEYLEN];
    int r = LIBSSH2_ERROR_DECRYPT;  /* fail */
    unsigned char *ptr = NULL;

    /*
     * Run ChaCha20 once to generate the Poly1305 key. The IV is the
     * packet sequence number.
     */
    memset(poly_key, 0, sizeof(poly_key));
    ptr = &seqbuf[0];
    ssh2_store_u64(&ptr, seqnr);
    chacha_ivsetup(&ctx->main_ctx, seqbuf, NULL);
    chacha_encrypt_bytes(&ctx->main_ctx, poly_key, poly_key, sizeof(poly_key));

    /* If decrypting, check tag before anything else */
    if(!do_encrypt) {
        const unsigned char *tag = src + aadlen + len;

        if(chachapoly_mac(ctx, expected_tag, src, aadlen + len, poly_key))
            goto out;
        if(chachapoly_timingsafe_bcmp(expected_tag, tag, POLY1305_TAGLEN))
            goto out;
    }

    /* Crypt additional data */
    if(aadlen) {
        chacha_ivsetup(&ctx->header_ctx, seqbuf, NULL);
        chacha_encrypt_bytes(&ctx->header_ctx, src, dest, aadlen);
    }

    /* Set Chacha's block counter to 1 */
    if(chachapoly_body(ctx, seqbuf, src + aadlen, dest + aadlen, len))
        goto out;

    /* If encrypting, calculate and append tag */
    if(do_encrypt &&
       chachapoly_mac(ctx, dest + aadlen + len, dest, aadlen + len, poly_key))
        goto out;

    r = LIBSSH2_ERROR_NONE;
out:
    ssh2_explicit_zero(expected_tag, sizeof(expected_tag));
    ssh2_explicit_zero(seqbuf, sizeof(seqbuf));
    ssh2_explicit_zero(poly_key, sizeof(poly_key));
    return r;
}

/* Decrypt and extract the encrypted packet length */
int chachapoly_get_length(struct chachapoly_ctx *ctx, unsigned int *plenp,
                          libssh2_uint64_t seqnr, const unsigned char *cp,
                          size_t len)
{
    unsigned char buf[4], seqbuf[8];
    unsigned char *ptr = NULL;

    if(len < 4)
        return -1;  /* fail */
    ptr = &seqbuf[0];
    ssh2_store_u64(&ptr, seqnr);
    chacha_ivsetup(&ctx->header_ctx, seqbuf, NULL);
    chacha_encrypt_bytes(&ctx->header_ctx, cp, buf, 4);
    *plenp = ssh2_ntohu32(buf);
    return 0;  /* success */
}
