/* Unit tests of the monitor's pure parts (monitor/test-units builds and runs this):
 * strict numbers, payload records, framing, log records and rotation. */
#include "monitor.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, \
				__LINE__, #cond);                             \
			failures++;                                           \
		}                                                             \
	} while (0)

static void test_parse_dec(void)
{
	uint32_t v = 0;

	CHECK(parse_dec("0", 10, &v) && v == 0);
	CHECK(parse_dec("1073741823", MAX_ID, &v) && v == MAX_ID);
	CHECK(!parse_dec("1073741824", MAX_ID, &v));
	CHECK(parse_dec("0000000007", 255, &v) && v == 7);
	CHECK(!parse_dec("00000000007", 255, &v)); /* 11 digits */
	CHECK(!parse_dec("99999999999999999999", UINT32_MAX, &v));
	const char *bad[] = { "", "-1", "+1", " 1", "1 ", "1x", "0x10", "1_0", "\xd9\xa1", NULL };
	for (int i = 0; i < 10; i++)
		CHECK(!parse_dec(bad[i], UINT32_MAX, &v));
}

static void test_payload(void)
{
	static const unsigned char ok[] = "id=5\0status=0\0message=a=b\0";
	uint32_t n = sizeof ok - 1, v;
	bool dup;

	CHECK(payload_ok(ok, n));
	CHECK(payload_ok(ok, 0));
	CHECK(!payload_ok((const unsigned char *)"id=5", 4));      /* no NUL */
	CHECK(!payload_ok((const unsigned char *)"id\0", 3));      /* no = */
	CHECK(!payload_ok((const unsigned char *)"=5\0", 3));      /* empty key */
	CHECK(!payload_ok((const unsigned char *)"\0", 1));        /* empty record */
	CHECK(strcmp(payload_get(ok, n, "message", &dup), "a=b") == 0 && !dup);
	CHECK(payload_get(ok, n, "i", &dup) == NULL);
	CHECK(payload_num(ok, n, "id", MAX_ID, &v) == 1 && v == 5);
	CHECK(payload_num(ok, n, "pid", MAX_ID, &v) == 0);
	CHECK(payload_num(ok, n, "message", MAX_ID, &v) == -1);
	static const unsigned char twice[] = "id=1\0id=2\0";
	CHECK(payload_num(twice, sizeof twice - 1, "id", MAX_ID, &v) == -1);
}

static unsigned frames_seen;
static uint32_t last_first, last_len;

static void count_frame(void *ctx, uint32_t first, const unsigned char *frame, uint32_t len)
{
	(void)ctx;
	(void)frame;
	frames_seen++;
	last_first = first;
	last_len = len;
}

static void test_framing(void)
{
	struct buf in = { 0 }, out = { 0 };

	frame_build(&out, MSG_ERROR, "status", "125", "message", "x", NULL);
	CHECK(buf_size(&out) == HEADER_SIZE + 21);
	CHECK(get_be32(out.data) == MSG_ERROR && get_be32(out.data + 4) == 21);
	CHECK(memcmp(out.data + HEADER_SIZE, "status=125\0message=x\0", 21) == 0);
	/* Byte by byte: a frame is handed over only once complete. */
	for (size_t i = 0; i < buf_size(&out); i++) {
		buf_append(&in, out.data + i, 1);
		CHECK(dispatch_frames(&in, CTL_MAX, count_frame, NULL) == 0);
		CHECK(frames_seen == (i + 1 == buf_size(&out)));
	}
	CHECK(last_first == MSG_ERROR && last_len == 21 && buf_size(&in) == 0);
	/* A header over the limit is refused before anything is allocated for it. */
	unsigned char big[HEADER_SIZE];
	put_be32(big, 5);
	put_be32(big + 4, IO_MAX + 1);
	buf_append(&in, big, sizeof big);
	CHECK(dispatch_frames(&in, IO_MAX, count_frame, NULL) == -2);
	CHECK(in.cap < 2 * READ_CHUNK);
	buf_free(&in);
	buf_free(&out);
}

static void test_sanitize(void)
{
	char out[MESSAGE_MAX + 1], long_in[2000];

	sanitize("ok\x1b[2J\n\x80", out);
	CHECK(strcmp(out, "ok?[2J??") == 0);
	sanitize(NULL, out);
	CHECK(out[0] == '\0');
	memset(long_in, 'a', sizeof long_in - 1);
	long_in[sizeof long_in - 1] = '\0';
	sanitize(long_in, out);
	CHECK(strlen(out) == MESSAGE_MAX);
}

static off_t size_of(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, 0) == 0 ? st.st_size : -1;
}

static void test_log(void)
{
	char dir[] = "/tmp/hyperrun-monitor-units.XXXXXX";
	struct logfile lg;
	struct timespec ts = { .tv_sec = 17, .tv_nsec = 5 };
	char header[96];

	CHECK(log_header(header, sizeof header, &ts, KIND_STDERR, 6) == 22);
	CHECK(strcmp(header, "17.000000005 stderr 6\n") == 0);
	CHECK(mkdtemp(dir) != NULL);
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(log_open(&lg, dirfd, 1000, 3) == 0);
	log_output(&lg, KIND_STDOUT, (const unsigned char *)"a\nbc\n\nd", 7);
	char data[256] = "";
	int fd = openat(dirfd, "container.log", O_RDONLY);
	ssize_t n = read(fd, data, sizeof data - 1);
	close(fd);
	CHECK(n > 0);
	/* Four records: "a\n", "bc\n", "\n" and the partial "d". */
	int records = 0;
	for (char *p = data; (p = strstr(p, " stdout ")); p++)
		records++;
	CHECK(records == 4);
	CHECK(strstr(data, " stdout 1\nd\n") != NULL);
	unsigned char line[100];
	memset(line, 'x', sizeof line);
	line[sizeof line - 1] = '\n';
	for (int i = 0; i < 500; i++)
		log_output(&lg, KIND_STDOUT, line, sizeof line);
	CHECK(size_of(dirfd, "container.log") <= 1000);
	CHECK(size_of(dirfd, "container.log.1") <= 1000 && size_of(dirfd, "container.log.1") > 800);
	CHECK(size_of(dirfd, "container.log.2") > 0);
	CHECK(size_of(dirfd, "container.log.3") == -1);
	/* One record bigger than the limit goes in alone. */
	unsigned char huge[3000];
	memset(huge, 'y', sizeof huge);
	log_output(&lg, KIND_STDOUT, huge, sizeof huge);
	CHECK(size_of(dirfd, "container.log") > 3000 && size_of(dirfd, "container.log") < 3100);
	log_close(&lg);
	/* Truncation with a single file. */
	CHECK(log_open(&lg, dirfd, 1000, 1) == 0);
	log_output(&lg, KIND_STDOUT, line, sizeof line);
	CHECK(size_of(dirfd, "container.log") < 200);
	log_close(&lg);
	exit_file(dirfd, 3, "");
	exit_file(dirfd, 4, "later calls do nothing");
	fd = openat(dirfd, "exit", O_RDONLY);
	memset(data, 0, sizeof data);
	CHECK(read(fd, data, sizeof data) == 3 && strcmp(data, "3\n\n") == 0);
	close(fd);
	const char *names[] = { "container.log", "container.log.1", "container.log.2", "exit" };
	for (size_t i = 0; i < 4; i++)
		unlinkat(dirfd, names[i], 0);
	close(dirfd);
	CHECK(rmdir(dir) == 0);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "parse_dec", test_parse_dec }, { "payload", test_payload },
		{ "framing", test_framing },     { "sanitize", test_sanitize },
		{ "log", test_log },
	};

	for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
		if (argc > 1 && !strstr(tests[i].name, argv[1]))
			continue;
		tests[i].fn();
		fprintf(stderr, "test-units: %s done\n", tests[i].name);
	}
	if (failures)
		fprintf(stderr, "test-units: %d checks failed\n", failures);
	return failures ? 1 : 0;
}
