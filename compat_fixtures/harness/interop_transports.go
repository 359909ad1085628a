package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/gomodule/redigo/redis"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// The live mode's brokers and result backends beyond Redis: what a --broker
// / --backend URL means, what machinery is given for it (Config.Broker,
// Config.ResultBackend, the SQS / DynamoDB / MongoDB config), and how the
// producer reads a group meta back. Version-specific pieces (the AWS SDK
// clients: aws-sdk-go v1 for machinery v1, aws-sdk-go-v2 for v2) are in
// transport_v1.go / transport_v2.go.

// Broker kinds and backend kinds.
const (
	kindRedis    = "redis"
	kindAMQP     = "amqp"
	kindSQS      = "sqs"
	kindMemcache = "memcache"
	kindMongoDB  = "mongodb"
	kindDynamoDB = "dynamodb"
)

// defaultSQSAccount is the account id in moto's (and the AWS docs') queue
// URLs, http://HOST:PORT/123456789012/<queue>.
const defaultSQSAccount = "123456789012"

// awsFlags are the AWS settings shared by the SQS broker and the DynamoDB
// backend: the endpoint overrides, region and the SQS receive settings.
type awsFlags struct {
	region                           string
	sqsEndpoint, dynamoEndpoint      string
	sqsWait, sqsVisibility           int
	taskStatesTable, groupMetasTable string
}

func (a *awsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.region, "aws-region", "", "AWS region (default $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)")
	fs.StringVar(&a.sqsEndpoint, "sqs-endpoint", "", "SQS endpoint URL, e.g. http://127.0.0.1:PORT (default: the host of an sqs:// broker, $AWS_ENDPOINT_URL_SQS, $AWS_ENDPOINT_URL, else AWS)")
	fs.IntVar(&a.sqsWait, "sqs-wait", 1, "SQS: Config.SQS.WaitTimeSeconds, the ReceiveMessage long poll (machinery's default 0 busy-polls)")
	fs.IntVar(&a.sqsVisibility, "sqs-visibility", 0, "SQS: Config.SQS.VisibilityTimeout in seconds (0: the queue's own)")
	fs.StringVar(&a.dynamoEndpoint, "dynamodb-endpoint", "", "DynamoDB endpoint URL (default: the host of a dynamodb:// backend, $AWS_ENDPOINT_URL_DYNAMODB, $AWS_ENDPOINT_URL, else AWS)")
	fs.StringVar(&a.taskStatesTable, "task-states-table", "task_states", "DynamoDB: Config.DynamoDB.TaskStatesTable (created if missing)")
	fs.StringVar(&a.groupMetasTable, "group-metas-table", "group_metas", "DynamoDB: Config.DynamoDB.GroupMetasTable (created if missing)")
}

// transport is a resolved --broker / --backend pair.
type transport struct {
	brokerKind, backendKind string
	// What machinery gets as Config.Broker / Config.ResultBackend: the
	// broker URL is the SQS queue URL prefix (queue URL = Broker + "/" +
	// queue); a DynamoDB backend is https://dynamodb.<region>.amazonaws.com,
	// the form v1's BackendFactory recognises (the injected client decides
	// where requests go).
	brokerURL, backendURL string

	region                   string
	accessKey, secretKey     string
	sessionToken             string
	sqsEndpoint, ddbEndpoint string // "" = the SDK's default (AWS)
	sqsWait, sqsVisibility   int
	taskStates, groupMetas   string
	memcacheServers          []string
	mongoDatabase            string // "" = machinery's default ("machinery")
	sqsReceiveHook           func() // called before every SQS ReceiveMessage (worker readiness)
}

func brokerKindOf(raw string) (string, error) {
	switch {
	case strings.HasPrefix(raw, "redis://"), strings.HasPrefix(raw, "rediss://"):
		return kindRedis, nil
	case isAMQP(raw):
		return kindAMQP, nil
	case strings.HasPrefix(raw, "sqs://"), strings.HasPrefix(raw, "https://"), strings.HasPrefix(raw, "http://"):
		return kindSQS, nil
	}
	return "", fmt.Errorf("unsupported broker URL %q (redis://, amqp://, sqs://HOST:PORT[/ACCOUNT] or an SQS queue URL prefix http(s)://...)", raw)
}

func backendKindOf(raw string) (string, error) {
	switch {
	case strings.HasPrefix(raw, "redis://"), strings.HasPrefix(raw, "rediss://"):
		return kindRedis, nil
	case isAMQP(raw):
		return kindAMQP, nil
	case strings.HasPrefix(raw, "memcache://"):
		return kindMemcache, nil
	case strings.HasPrefix(raw, "mongodb://"), strings.HasPrefix(raw, "mongodb+srv://"):
		return kindMongoDB, nil
	case strings.HasPrefix(raw, "dynamodb://"), strings.HasPrefix(raw, "https://dynamodb"):
		return kindDynamoDB, nil
	}
	return "", fmt.Errorf("unsupported backend URL %q (redis://, amqp://, memcache://, mongodb://, dynamodb://)", raw)
}

// resolveTransport turns the flags into a transport.
func resolveTransport(f *interopFlags) (*transport, error) {
	t := &transport{
		brokerURL:     f.broker,
		backendURL:    f.backend,
		region:        firstNonEmpty(f.aws.region, os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION"), "us-east-1"),
		accessKey:     firstNonEmpty(os.Getenv("AWS_ACCESS_KEY_ID"), "test"),
		secretKey:     firstNonEmpty(os.Getenv("AWS_SECRET_ACCESS_KEY"), "test"),
		sessionToken:  os.Getenv("AWS_SESSION_TOKEN"),
		sqsWait:       f.aws.sqsWait,
		sqsVisibility: f.aws.sqsVisibility,
		taskStates:    f.aws.taskStatesTable,
		groupMetas:    f.aws.groupMetasTable,
	}
	var err error
	if t.brokerKind, err = brokerKindOf(f.broker); err != nil {
		return nil, err
	}
	if t.backendKind, err = backendKindOf(f.backend); err != nil {
		return nil, err
	}

	if t.brokerKind == kindSQS {
		var hostEndpoint string
		if strings.HasPrefix(f.broker, "sqs://") {
			// sqs://HOST:PORT[/ACCOUNT]: a local SQS (moto) on plain HTTP.
			u, err := url.Parse(f.broker)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("bad SQS broker URL %q: expected sqs://HOST:PORT[/ACCOUNT]", f.broker)
			}
			account := strings.Trim(u.Path, "/")
			if account == "" {
				account = defaultSQSAccount
			}
			hostEndpoint = "http://" + u.Host
			t.brokerURL = hostEndpoint + "/" + account
		}
		t.brokerURL = strings.TrimRight(t.brokerURL, "/")
		t.sqsEndpoint = firstNonEmpty(f.aws.sqsEndpoint, hostEndpoint, os.Getenv("AWS_ENDPOINT_URL_SQS"), os.Getenv("AWS_ENDPOINT_URL"))
	}

	switch t.backendKind {
	case kindDynamoDB:
		var hostEndpoint string
		if strings.HasPrefix(f.backend, "dynamodb://") {
			u, err := url.Parse(f.backend)
			if err != nil {
				return nil, fmt.Errorf("bad DynamoDB backend URL %q: %v", f.backend, err)
			}
			if u.Host != "" {
				hostEndpoint = "http://" + u.Host
			}
			t.backendURL = "https://dynamodb." + t.region + ".amazonaws.com"
		}
		t.ddbEndpoint = firstNonEmpty(f.aws.dynamoEndpoint, hostEndpoint, os.Getenv("AWS_ENDPOINT_URL_DYNAMODB"), os.Getenv("AWS_ENDPOINT_URL"))
		if t.taskStates == "" || t.groupMetas == "" {
			return nil, fmt.Errorf("--task-states-table and --group-metas-table must not be empty")
		}
	case kindMemcache:
		t.memcacheServers = strings.Split(strings.TrimPrefix(f.backend, "memcache://"), ",")
	case kindMongoDB:
		// machinery never reads the database from the URI (it uses
		// Config.MongoDB.Database, default "machinery"); the harness takes
		// a path segment as that setting, so tests can use their own.
		u, err := url.Parse(f.backend)
		if err != nil {
			return nil, fmt.Errorf("bad MongoDB backend URL %q: %v", f.backend, err)
		}
		t.mongoDatabase = strings.Trim(u.Path, "/")
	}
	return t, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// counterRedisURL is the Redis of the task set's counters and keys
// (count_call, retry_later, stamp) and of the producer's checks on them:
// --redis, else the backend if it is Redis, else the broker if it is.
func counterRedisURL(f *interopFlags, t *transport) (string, error) {
	switch {
	case f.redis != "":
		return f.redis, nil
	case t.backendKind == kindRedis:
		return f.backend, nil
	case t.brokerKind == kindRedis:
		return f.broker, nil
	}
	return "", fmt.Errorf("--redis URL is required when neither --broker nor --backend is redis:// (the task set keeps its counters there)")
}

func newRedisPool(redisURL string) *redis.Pool {
	return &redis.Pool{
		MaxIdle:     16,
		IdleTimeout: time.Minute,
		Dial:        func() (redis.Conn, error) { return redis.DialURL(redisURL) },
	}
}

// groupMetaReader reads what the result backend stored for a group:
// the raw stored form for messages (JSON, or the decoded document
// re-marshalled) and the GroupMeta a Go consumer decodes from it.
type groupMetaReader func(groupUUID string) (*GroupMeta, []byte, error)

// newGroupMetaReader is the reader for the backend of t; nil for the AMQP
// backend, which keeps no group meta (InitGroup is a no-op there; the
// group's queue holds the finished members' states).
func newGroupMetaReader(t *transport, redisPool *redis.Pool, ddb groupMetaReader) (groupMetaReader, func(), error) {
	switch t.backendKind {
	case kindRedis:
		pool := redisPool
		closeFn := func() {}
		if pool == nil {
			pool = newRedisPool(t.backendURL)
			closeFn = func() { pool.Close() }
		}
		return func(groupUUID string) (*GroupMeta, []byte, error) {
			conn := pool.Get()
			defer conn.Close()
			b, err := redis.Bytes(conn.Do("GET", groupUUID))
			if err != nil {
				return nil, nil, fmt.Errorf("GET %s: %v", groupUUID, err)
			}
			meta := new(GroupMeta)
			return meta, b, decodeAsConsumer(b, meta)
		}, closeFn, nil
	case kindMemcache:
		mc := memcache.New(t.memcacheServers...)
		return func(groupUUID string) (*GroupMeta, []byte, error) {
			item, err := mc.Get(groupUUID)
			if err != nil {
				return nil, nil, fmt.Errorf("memcache get %s: %v", groupUUID, err)
			}
			meta := new(GroupMeta)
			return meta, item.Value, decodeAsConsumer(item.Value, meta)
		}, func() {}, nil
	case kindMongoDB:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		client, err := mongo.Connect(ctx, options.Client().ApplyURI(t.backendURL))
		if err != nil {
			return nil, nil, fmt.Errorf("mongodb: %v", err)
		}
		coll := client.Database(firstNonEmpty(t.mongoDatabase, "machinery")).Collection("group_metas")
		return func(groupUUID string) (*GroupMeta, []byte, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var doc bson.M
				if err := coll.FindOne(ctx, bson.M{"_id": groupUUID}).Decode(&doc); err != nil {
					return nil, nil, fmt.Errorf("group_metas.findOne(%s): %v", groupUUID, err)
				}
				raw, _ := json.Marshal(doc)
				meta := new(GroupMeta)
				b, err := bson.Marshal(doc)
				if err == nil {
					err = bson.Unmarshal(b, meta)
				}
				return meta, raw, err
			}, func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				client.Disconnect(ctx)
			}, nil
	case kindDynamoDB:
		return ddb, func() {}, nil
	}
	return nil, func() {}, nil
}

// sqsOps / dynamoOps are the harness's own calls on the clients it injects
// into machinery (transport_v1.go: aws-sdk-go v1, transport_v2.go:
// aws-sdk-go-v2).
type sqsOps struct {
	create func(queue string, attributes map[string]string) error
	exists func(queue string) error
}

type dynamoOps struct {
	exists    func(table string) bool
	create    func(table, hashKey string) error // nil when another process created it first
	wait      func(table string) error
	groupMeta func(table, groupUUID string) (meta *GroupMeta, found bool, err error)
}

// visibility is Config.SQS.VisibilityTimeout: nil = the queue's own.
func (t *transport) visibility() *int {
	if t.sqsVisibility <= 0 {
		return nil
	}
	v := t.sqsVisibility
	return &v
}

// setupAWS gives machinery the SQS and DynamoDB clients t needs (Config.SQS,
// Config.DynamoDB), creates the queue and the tables machinery expects to
// exist, and returns the DynamoDB group meta reader (nil otherwise).
func setupAWS(cnf *Config, t *transport, queue string) (groupMetaReader, error) {
	if t.brokerKind == kindSQS {
		ops, err := injectSQS(cnf, t)
		if err != nil {
			return nil, err
		}
		// A FIFO queue for a .fifo name; an existing queue (whatever its
		// attributes) is kept.
		var attributes map[string]string
		if strings.HasSuffix(queue, ".fifo") {
			attributes = map[string]string{"FifoQueue": "true"}
		}
		if err := ops.create(queue, attributes); err != nil && ops.exists(queue) != nil {
			return nil, fmt.Errorf("sqs CreateQueue %s: %v", queue, err)
		}
	}
	if t.backendKind != kindDynamoDB {
		return nil, nil
	}
	ops, err := injectDynamoDB(cnf, t)
	if err != nil {
		return nil, err
	}
	// The key schema of machinery's instruction-notes/dynamodb.md: a string
	// hash key, TaskUUID resp. GroupUUID; on-demand billing.
	for table, key := range map[string]string{t.taskStates: "TaskUUID", t.groupMetas: "GroupUUID"} {
		if ops.exists(table) {
			continue
		}
		if err := ops.create(table, key); err != nil {
			return nil, fmt.Errorf("dynamodb CreateTable %s: %v", table, err)
		}
		if err := ops.wait(table); err != nil {
			return nil, fmt.Errorf("dynamodb table %s: %v", table, err)
		}
	}
	table := t.groupMetas
	return func(groupUUID string) (*GroupMeta, []byte, error) {
		meta, found, err := ops.groupMeta(table, groupUUID)
		switch {
		case err != nil:
			return nil, nil, fmt.Errorf("GetItem %s: %v", groupUUID, err)
		case !found:
			return nil, nil, fmt.Errorf("GetItem %s: no item", groupUUID)
		}
		raw, _ := json.Marshal(meta)
		return meta, raw, nil
	}, nil
}
