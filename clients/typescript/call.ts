// Type-checked against the generated client (never run): if the contract
// changes in a way TypeScript callers would notice, `tsc` fails here.
import { create } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import { CreateFeedbackRequestSchema, type Feedback, FeedbackService } from "./gen/feedback/v1/feedback_pb";

declare const transport: Transport;

export function rateRun(): Promise<Feedback> {
  const client = createClient(FeedbackService, transport);
  const request = create(CreateFeedbackRequestSchema, {
    threadId: "t1",
    runId: "r1",
    rating: 1,
    comment: "helpful",
  });
  return client.createFeedback(request, { headers: { authorization: "Bearer <JWT>" } });
}
