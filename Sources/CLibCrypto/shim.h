// Debian's OpenSSL libcrypto (libssl-dev): in-place AEAD for the stream hot path.
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
