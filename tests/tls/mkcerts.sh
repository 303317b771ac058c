#!/bin/sh
# mkcerts.sh DIR
#
# Makes the certificates of the TLS tests in DIR (created if missing) with
# the openssl command: a CA (ca.pem), party certificates p0..p3 whose
# subjectAltName DNS entry is the party id (pN.pem, pN.key), a certificate
# with the common name "cnonly" and no subjectAltName (cnonly.*), one that
# expired (expired.*, named p1), and one of another CA (other.*, named p1,
# with that CA in other-ca.pem).  Nothing here is committed: the tests make
# them at run time.  Exits 77 when openssl is missing, so that a test that
# runs it can skip.
set -eu

dir=${1:?usage: mkcerts.sh DIR}
if ! command -v openssl >/dev/null 2>&1; then
	echo "mkcerts: the openssl command is not installed" >&2
	exit 77
fi
mkdir -p "$dir"
cd "$dir"

# EC keys: fast to make, and what TLS 1.3 likes.
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # NAME SUBJECT
	key "$1.key"
	openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 \
		-addext basicConstraints=critical,CA:TRUE \
		-addext keyUsage=critical,keyCertSign,cRLSign \
		-out "$1.pem" 2>/dev/null
}

# A mini CA for `openssl ca`, which alone takes any start and end dates.
caconf() { # NAME
	mkdir -p "$1.db"
	: >"$1.db/index.txt"
	echo 01 >"$1.db/serial"
	cat >"$1.cnf" <<CNF
[ca]
default_ca = this
[this]
database = $1.db/index.txt
serial = $1.db/serial
new_certs_dir = $1.db
certificate = $1.pem
private_key = $1.key
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = copy
[anything]
commonName = supplied
[party]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
CNF
}

leaf() { # CA NAME CN SAN|"" [STARTDATE ENDDATE]
	key "$2.key"
	if [ -n "$4" ]; then
		openssl req -new -key "$2.key" -subj "/CN=$3" \
			-addext "subjectAltName=$4" -out "$2.csr" 2>/dev/null
	else
		openssl req -new -key "$2.key" -subj "/CN=$3" -out "$2.csr" 2>/dev/null
	fi
	if [ $# -ge 6 ]; then
		dates="-startdate $5 -enddate $6"
	else
		dates="-days 3650"
	fi
	# shellcheck disable=SC2086
	openssl ca -batch -config "$1.cnf" -extensions party $dates \
		-in "$2.csr" -out "$2.pem" -notext 2>/dev/null
	rm -f "$2.csr"
}

ca ca "tagwire test CA"
caconf ca
for p in p0 p1 p2 p3; do
	leaf ca "$p" "$p" "DNS:$p"
done
leaf ca cnonly cnonly ""
leaf ca expired p1 "DNS:p1" 20200101000000Z 20200102000000Z

ca other-ca "another CA"
caconf other-ca
leaf other-ca other p1 "DNS:p1"
