// A program that uses tagwire the way an application does: only the public
// header and the installed library.  It checks that the header and the
// library agree on the version and that a few calls work, and prints one
// line that the install test looks for.

#include <stdio.h>
#include <string.h>

#include <tagwire/tagwire.h>

int main(void)
{
	char header[32];
	snprintf(header, sizeof(header), "%d.%d.%d", TW_VERSION_MAJOR,
	    TW_VERSION_MINOR, TW_VERSION_PATCH);
	if (strcmp(tw_version(), header) != 0) {
		fprintf(
		    stderr, "library %s, header %s\n", tw_version(), header);
		return 1;
	}

	// A mailbox round trip needs no peer.
	tw_mailbox *m = tw_mailbox_new();
	tw_buf b = { NULL, 0 };
	int status = m ? tw_mailbox_push(m, 1, "t", "ping", 5) : TW_ENOMEM;
	if (status == TW_OK)
		status = tw_mailbox_pop(m, 1, "t", 0, &b);
	if (status == TW_OK && (b.len != 5 || memcmp(b.data, "ping", 5) != 0))
		status = TW_EPROTO;
	tw_buf_free(&b);
	tw_mailbox_free(m);
	if (status != TW_OK) {
		fprintf(stderr, "mailbox: %s\n", tw_strerror(status));
		return 1;
	}

	// Descriptions validate their options (quietly: the invalid value
	// below would be logged as an error).
	tw_log_set_level(TW_LOG_NONE);
	tw_desc *d = tw_desc_new("consumer");
	int64_t v = 0;
	if (d == NULL || tw_desc_add_party(d, "a", "mem://a") != TW_OK
	    || tw_desc_get(d, TW_OPT_STRIPES, &v) != TW_OK || v != 1
	    || tw_desc_set(d, TW_OPT_STRIPES, 0) != TW_EINVAL) {
		fprintf(stderr, "desc: unexpected result\n");
		tw_desc_free(d);
		return 1;
	}
	tw_desc_free(d);

	printf("tagwire %s consumer ok\n", tw_version());
	return 0;
}
