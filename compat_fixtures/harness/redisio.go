package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// parseRedisURL splits redis://[user:pass@|pass@]host:port[/db] the way
// machinery v1's ParseRedisURL does (userinfo without ':' is the password).
func parseRedisURL(raw string) (host, password string, db int, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", 0, err
	}
	if u.Scheme != "redis" {
		return "", "", 0, fmt.Errorf("expected redis:// URL, got %q", raw)
	}
	if u.User != nil {
		var ok bool
		if password, ok = u.User.Password(); !ok {
			password = u.User.Username()
		}
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if db, err = strconv.Atoi(p); err != nil {
			return "", "", 0, fmt.Errorf("bad redis db in %q: %v", raw, err)
		}
	}
	return u.Host, password, db, nil
}

// store reads back, byte for byte, what machinery wrote into Redis.
type store struct{ conn redis.Conn }

func openStore(redisURL string) (*store, error) {
	conn, err := redis.DialURL(redisURL)
	if err != nil {
		return nil, err
	}
	return &store{conn: conn}, nil
}

func (s *store) close() { s.conn.Close() }

func (s *store) dbSize() (int, error) { return redis.Int(s.conn.Do("DBSIZE")) }

func (s *store) flush() error { _, err := s.conn.Do("FLUSHDB"); return err }

// get returns the raw value of a state / group-meta key.
func (s *store) get(key string) ([]byte, error) {
	return redis.Bytes(s.conn.Do("GET", key))
}

// drainList returns every message of a broker queue (LRANGE 0 -1) and
// deletes the list, so the next capture starts from an empty queue.
func (s *store) drainList(queue string) ([][]byte, error) {
	msgs, err := redis.ByteSlices(s.conn.Do("LRANGE", queue, 0, -1))
	if err != nil {
		return nil, err
	}
	_, err = s.conn.Do("DEL", queue)
	return msgs, err
}

// drainZSet is drainList for the delayed-tasks ZSET (ZRANGE 0 -1).
func (s *store) drainZSet(key string) ([][]byte, error) {
	msgs, err := redis.ByteSlices(s.conn.Do("ZRANGE", key, 0, -1))
	if err != nil {
		return nil, err
	}
	_, err = s.conn.Do("DEL", key)
	return msgs, err
}

// drainOne is drainList/drainZSet that insists on exactly one message.
func drainOne(drain func(string) ([][]byte, error), key string) ([]byte, error) {
	msgs, err := drain(key)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("expected exactly 1 message in %q, found %d", key, len(msgs))
	}
	return msgs[0], nil
}
